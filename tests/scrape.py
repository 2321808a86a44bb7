"""Read an exporter's /metrics the way Prometheus does (prometheus_client's own
text parser), for the tests that check what a real run exported."""

import time
import urllib.request
from typing import Dict

from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families


def served_page(exporter) -> str:
    """The exporter's /metrics page once its server process has the latest one
    (publish hands it over a pipe and returns: a scrape right after may still
    get the one before, as a loaded machine shows)."""
    latest = generate_latest(exporter.registry).decode()
    deadline = time.monotonic() + 10
    while True:
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics",
                                    timeout=5) as r:
            text = r.read().decode()
        if text == latest or time.monotonic() > deadline:
            return text
        time.sleep(0.02)


def scrape(port: int) -> Dict[str, Dict[tuple, float]]:
    """Sample name -> {sorted (label, value) pairs without "run" and "config": value}."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    out: Dict[str, Dict[tuple, float]] = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items()
                                  if k not in ("run", "config")))
            out.setdefault(s.name, {})[labels] = s.value
    return out


def by_label(samples: Dict[tuple, float], label: str) -> Dict[str, float]:
    """One label's value -> sample value, e.g. nonfinite_total by "where"."""
    return {dict(labels)[label]: v for labels, v in samples.items() if label in dict(labels)}
