"""Notices from dependencies that a user of rllib-av cannot act on, dropped once at start-up.

Each entry names the logger that emits it, how its message begins, and why it
is noise here. Anything else those loggers say still gets through.
"""

from __future__ import annotations

import logging

NOTICES = (
    # TD3Config runs on the new API stack by design; the notice offers the old one.
    ("ray.rllib.algorithms.algorithm_config", "You are running TD3 on the new API stack"),
    # RLlib's own RLModuleSpec.build still makes an RLModuleConfig internally.
    ("ray._common.deprecation", "DeprecationWarning: `RLModule(config=[RLModuleConfig object])`"),
    # Ray Tune's system-usage monitor, which rllib-av neither shows nor exports.
    ("ray.tune.utils.util", "Install gputil for GPU system monitoring"),
    # Token authentication is how rllib-av runs Ray; the notice only offers to
    # turn it off. (Its "disabled" twin, a real warning, still gets through.)
    ("ray._private.authentication.authentication_token_setup",
     "Token authentication is enabled for this Ray cluster"),
)


class _DropNotice(logging.Filter):
    def __init__(self, prefix: str):
        super().__init__()
        self.prefix = prefix

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.prefix)


def quiet_dependency_notices() -> None:
    """Attach the filters (idempotent). Loggers exist before their modules load,
    so this runs before Ray is imported."""
    for name, prefix in NOTICES:
        log = logging.getLogger(name)
        if not any(isinstance(f, _DropNotice) and f.prefix == prefix for f in log.filters):
            log.addFilter(_DropNotice(prefix))
