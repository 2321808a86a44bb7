"""Prometheus + Alertmanager + a webhook recorder on loopback, from the
repository's own cluster/ configs: `rllib-av monitor RUN_DIR`, the end-to-end
tests and the alert-latency benchmark.

The configs are copied with only what a local stack must change: listen
addresses and ports, the exporter target, the webhook URL and (``fast``) the
scrape/evaluation interval and Alertmanager's group wait. Rules and routing
are the deployed ones. ``history`` (OpenMetrics text, see run_history.py) is
backfilled with promtool before Prometheus starts, so a finished run's
metrics are there to query and graph.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Dict, List, Optional

import yaml

from rllib_av.config_schema import ConfigError
from rllib_av.monitoring.run_history import run_history, time_span

CLUSTER_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "cluster")
PORT_FILE = "exporter_port"  # written by the training driver (monitoring/callbacks.py)
# A finished run's history may be older than Prometheus' default retention (15 days).
RETENTION = "100y"
# Debian's name for it; upstream's tarball calls it alertmanager.
ALERTMANAGER = ("prometheus-alertmanager" if shutil.which("prometheus-alertmanager")
                else "alertmanager")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, timeout: float = 5.0):
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return json.loads(r.read().decode())


def wait_until(pred, timeout: float, what: str, poll: float = 0.2):
    """Poll ``pred`` until it returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            got = pred()
        except OSError:
            got = None
        if got:
            return got
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout:.0f}s for {what}")
        time.sleep(poll)


class WebhookRecorder:
    """Records every Alertmanager webhook POST with its arrival time."""

    def __init__(self):
        self.received: List[Dict] = []
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                recorder.received.append({"t": time.time(), "path": self.path,
                                          "body": json.loads(body or b"{}")})
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self._server.server_port}"
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def alerts(self, status: str = "firing") -> List[Dict]:
        """(arrival time, receiver path, alert) for every alert received."""
        return [dict(a, t=p["t"], path=p["path"]) for p in self.received
                for a in p["body"].get("alerts", []) if a.get("status") == status]

    def close(self):
        self._server.shutdown()
        self._server.server_close()


class LocalStack:
    """Prometheus scraping ``exporter_targets`` ("host:port") and alerting to
    a local Alertmanager that posts to a WebhookRecorder."""

    def __init__(self, exporter_targets: List[str], fast: bool = True,
                 cluster_dir: str = CLUSTER_DIR, history: Optional[str] = None):
        self.dir = tempfile.mkdtemp(prefix="rllib_av_stack_")
        self.webhook = WebhookRecorder()
        self._procs: List[subprocess.Popen] = []
        try:
            self.am_port = free_port()
            self._start_alertmanager(cluster_dir, fast)
            self.prom_port = free_port()
            if history is not None:
                self._backfill(history)
            self._start_prometheus(cluster_dir, exporter_targets, fast)
        except BaseException:
            self.close()
            raise
        self.prom_url = f"http://127.0.0.1:{self.prom_port}"
        self.am_url = f"http://127.0.0.1:{self.am_port}"

    def _spawn(self, name: str, args: List[str], ready_url: str) -> None:
        log = open(os.path.join(self.dir, f"{name}.log"), "wb")
        self._procs.append(subprocess.Popen(args, stdout=log, stderr=subprocess.STDOUT))
        wait_until(lambda: urllib.request.urlopen(ready_url, timeout=1).status == 200,
                   30, f"{name} ready ({self.dir}/{name}.log)")

    def _start_alertmanager(self, cluster_dir: str, fast: bool) -> None:
        with open(os.path.join(cluster_dir, "alertmanager", "alertmanager.yml")) as f:
            cfg = yaml.safe_load(f)
        for rcv in cfg["receivers"]:
            for hook in rcv.get("webhook_configs", []):
                path = urllib.parse.urlparse(hook["url"]).path
                hook["url"] = self.webhook.url + path
        if fast:
            for route in [cfg["route"]] + cfg["route"].get("routes", []):
                route["group_wait"] = "1s"
        path = os.path.join(self.dir, "alertmanager.yml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        self._spawn("alertmanager", [
            ALERTMANAGER,
            f"--config.file={path}", f"--storage.path={self.dir}/am-data",
            f"--web.listen-address=127.0.0.1:{self.am_port}",
            "--cluster.listen-address=",  # no gossip: one local instance
        ], f"http://127.0.0.1:{self.am_port}/-/ready")

    def _backfill(self, openmetrics: str) -> None:
        path = os.path.join(self.dir, "history.om")
        with open(path, "w") as f:
            f.write(openmetrics)
        done = subprocess.run(["promtool", "tsdb", "create-blocks-from", "openmetrics", "--quiet",
                               path, os.path.join(self.dir, "prom-data")],
                              capture_output=True, text=True)
        if done.returncode != 0:
            raise RuntimeError(f"promtool could not backfill {path}: {done.stderr.strip()}")

    def _start_prometheus(self, cluster_dir: str, exporter_targets: List[str], fast: bool) -> None:
        src = os.path.join(cluster_dir, "prometheus")
        with open(os.path.join(src, "prometheus.yml")) as f:
            cfg = yaml.safe_load(f)
        if fast:
            cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
        self.scrape_interval = cfg["global"]["scrape_interval"]
        self.evaluation_interval = cfg["global"]["evaluation_interval"]
        cfg["rule_files"] = [os.path.abspath(os.path.join(src, r)) for r in cfg["rule_files"]]
        cfg["alerting"]["alertmanagers"] = [
            {"static_configs": [{"targets": [f"127.0.0.1:{self.am_port}"]}]}]
        # Only the exporter: Ray's own targets are not part of a local stack.
        cfg["scrape_configs"] = [dict(c, static_configs=[{"targets": list(exporter_targets)}])
                                 for c in cfg["scrape_configs"] if c["job_name"] == "rllib_av"]
        path = os.path.join(self.dir, "prometheus.yml")
        with open(path, "w") as f:
            yaml.safe_dump(cfg, f)
        self._spawn("prometheus", [
            "prometheus", f"--config.file={path}", f"--storage.tsdb.path={self.dir}/prom-data",
            f"--web.listen-address=127.0.0.1:{self.prom_port}",
            f"--storage.tsdb.retention.time={RETENTION}",
        ], f"http://127.0.0.1:{self.prom_port}/-/ready")

    def query(self, expr: str) -> List[Dict]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return http_json(url)["data"]["result"]

    def query_range(self, expr: str, start: float, end: float, step: float) -> List[Dict]:
        url = f"{self.prom_url}/api/v1/query_range?" + urllib.parse.urlencode(
            {"query": expr, "start": start, "end": end, "step": step})
        return http_json(url)["data"]["result"]

    def alerting_rules(self) -> List[Dict]:
        """The loaded alerting rules (name, query, duration in s, labels, annotations)."""
        groups = http_json(f"{self.prom_url}/api/v1/rules?type=alert")["data"]["groups"]
        return [r for g in groups for r in g["rules"]]

    def firing(self, alertname: Optional[str] = None) -> List[Dict]:
        alerts = http_json(f"{self.prom_url}/api/v1/alerts")["data"]["alerts"]
        return [a for a in alerts if a["state"] == "firing"
                and alertname in (None, a["labels"]["alertname"])]

    def close(self) -> None:
        for p in self._procs:
            p.terminate()
        for p in self._procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self._procs = []
        self.webhook.close()
        shutil.rmtree(self.dir, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def _say(line: str) -> None:
    print(line, flush=True)  # at once, also into a pipe (make monitor | tee ...)


def monitor(run_dir: str, out: Callable[[str], None] = _say) -> None:
    """`rllib-av monitor RUN_DIR`: Prometheus (the run's history backfilled, its
    exporter scraped while it runs) and Alertmanager, until Ctrl-C."""
    for tool in ("prometheus", "promtool", ALERTMANAGER):
        if shutil.which(tool) is None:
            raise ConfigError(f"monitor: {tool!r} is not installed; expected Debian's prometheus "
                              "and prometheus-alertmanager (make system-deps installs them)")
    signal.signal(signal.SIGTERM, _interrupt)  # `kill` stops it as cleanly as Ctrl-C
    target = exporter_target(run_dir)
    labels = live_labels(target) if target else None
    live = labels is not None
    labels = labels or finished_run_labels(run_dir)
    labels.update(job="rllib_av", instance=target or "none")
    history = run_history(run_dir, labels)
    with LocalStack([target] if live else [], fast=False,
                    history=history.openmetrics() if history.num_samples else None) as stack:
        span = time_span(run_dir)
        selector = f'rllib_av_q_bound_ratio{{run="{labels["run"]}"}}'
        out(f"run {os.path.basename(run_dir)}: "
            + (f"running, exporter {target} scraped every {stack.scrape_interval}" if live
               else "not running (no exporter answers)")
            + f"; {history.num_samples} samples of its history backfilled from metrics.jsonl")
        out(f"  Prometheus    {stack.prom_url}/graph?" + urllib.parse.urlencode(
            _graph_params(selector, span)))
        out(f"  Alertmanager  {stack.am_url}")
        if span is not None:
            for line in alert_conditions(stack, *span):
                out("  " + line)
        out("Alerts from the project's rules are printed here as Alertmanager sends them; "
            "Ctrl-C stops." if live else "Ctrl-C stops.")
        seen = 0
        try:
            while True:
                time.sleep(1)
                alerts = stack.webhook.alerts()
                for a in alerts[seen:]:
                    out(f"ALERT {a['labels'].get('alertname')} ({a['labels'].get('severity')}): "
                        f"{a['annotations'].get('description', '')}")
                seen = len(alerts)
        except KeyboardInterrupt:
            out("stopping Prometheus and Alertmanager")


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def exporter_target(run_dir: str) -> Optional[str]:
    """host:port the run's exporter was serving on (RUN_DIR/exporter_port), if it wrote one."""
    path = os.path.join(run_dir, PORT_FILE)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        port = f.read().strip()
    with open(os.path.join(run_dir, "config.yaml")) as f:
        host = ((yaml.safe_load(f) or {}).get("monitoring") or {}).get("exporter_host",
                                                                         "127.0.0.1")
    return f"{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}"


def live_labels(target: str) -> Optional[Dict[str, str]]:
    """The labels (run, ...) a live exporter at ``target`` serves, or None if none answers."""
    try:
        with urllib.request.urlopen(f"http://{target}/metrics", timeout=2) as r:
            page = r.read().decode()
    except OSError:
        return None
    found = re.search(r"^rllib_av_env_steps_total\{(.*)\}", page, re.M)
    if found is None:  # something else took the port since
        return None
    return dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', found.group(1)))


def finished_run_labels(run_dir: str) -> Dict[str, str]:
    """The labels of a run whose exporter is gone: ``run`` is the run directory's
    name (unique per run), ``config`` the run config's name."""
    with open(os.path.join(run_dir, "config.yaml")) as f:
        name = ((yaml.safe_load(f) or {}).get("run") or {}).get("name", "run")
    return {"run": os.path.basename(os.path.abspath(run_dir)), "config": name}


def alert_conditions(stack: LocalStack, start: float, end: float) -> List[str]:
    """Which alert rules' conditions held over [start, end], evaluated at the rules'
    own interval (a finished run's alerts never fired live: Prometheus evaluates
    rules on new samples only)."""
    step = _seconds(stack.evaluation_interval)
    lines = []
    for rule in stack.alerting_rules():
        held = sorted({float(t) for s in stack.query_range(rule["query"], start, end + step, step)
                       for t, _ in s["values"]})
        if not held:
            continue
        longest, needed = _longest_run(held, step), rule.get("duration", 0)
        verdict = ("would have fired" if longest >= needed
                   else f"shorter than its for: {needed:.0f}s, would not have fired")
        lines.append(f"{rule['name']}: condition true at {len(held)} of the run's rule "
                     f"evaluations, longest stretch {longest:.0f}s ({verdict})")
    return lines or ["no alert rule's condition held during the run"]


def _longest_run(times: List[float], step: float) -> float:
    """Longest stretch of consecutive evaluations, in seconds (one evaluation = 0 s)."""
    best, first = 0.0, times[0]
    for prev, t in zip(times, times[1:]):
        if t - prev > step * 1.5:
            first = t
        best = max(best, t - first)
    return best


def _seconds(duration: str) -> float:
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    value, unit = re.fullmatch(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)", duration).groups()
    return float(value) * units[unit]


def _graph_params(expr: str, span) -> Dict[str, str]:
    params = {"g0.expr": expr, "g0.tab": "0"}
    if span is not None:  # the run's own time range, so its history is on screen
        params["g0.range_input"] = f"{max(int(span[1] - span[0]) + 60, 60)}s"
        params["g0.end_input"] = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(span[1] + 30))
    return params
