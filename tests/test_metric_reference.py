"""docs/metrics.md is the metric reference generated from the statistics spec:
it must say what the exporter serves, nothing more, nothing less."""

import os
import re
import urllib.request

from prometheus_client.parser import text_string_to_metric_families

from rllib_av.monitoring.exporter import HealthExporter
from rllib_av.monitoring.metric_reference import render

DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "docs",
                   "metrics.md")


def test_docs_metrics_md_is_generated_from_the_spec():
    with open(DOC) as f:
        assert f.read() == render(), (
            "docs/metrics.md is stale: python -m rllib_av.monitoring.metric_reference "
            "> docs/metrics.md")


def test_the_reference_lists_exactly_what_the_exporter_serves():
    e = HealthExporter("ref", port=0)
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{e.port}/metrics", timeout=5).read()
    finally:
        e.close()
    served = {f.name + ("_total" if f.type == "counter" else ""): f.documentation
              for f in text_string_to_metric_families(text.decode())}
    documented = dict(re.findall(r"^\| `(rllib_av_\w+)` \| \w+ \| [^|]+ \| (.+) \|$",
                                 render(), re.M))
    assert set(documented) == set(served)
    for name, help_text in served.items():
        assert documented[name].replace("\\|", "|") == help_text, name
