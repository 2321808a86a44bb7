"""Notices from dependencies that a user cannot act on are dropped at start-up;
everything else their loggers say still gets through."""

import logging

from rllib_av.dependency_noise import NOTICES, quiet_dependency_notices


def test_known_notices_are_dropped_and_the_rest_kept(caplog):
    quiet_dependency_notices()
    quiet_dependency_notices()  # idempotent: one filter per notice
    for name, prefix in NOTICES:
        log = logging.getLogger(name)
        assert len(log.filters) == len({p for n, p in NOTICES if n == name})
        with caplog.at_level(logging.WARNING, logger=name):
            caplog.clear()
            log.warning(prefix + " ... and the rest of the notice")
            log.warning("something else from %s", name)
        assert [r.getMessage() for r in caplog.records] == [f"something else from {name}"]
