"""Prometheus + Alertmanager + a webhook recorder on loopback, from the
repository's own cluster/ configs: for end-to-end tests, the alert-latency
benchmark and local debugging (`python -m rllib_av.monitoring.local_stack`).

The configs are copied with only what a local stack must change: listen
addresses and ports, the exporter target, the webhook URL and (``fast``) the
scrape/evaluation interval and Alertmanager's group wait. Rules and routing
are the deployed ones.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Dict, List, Optional

import yaml

CLUSTER_DIR = os.path.join(os.path.dirname(__file__), "..", "..", "cluster")


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
                 cluster_dir: str = CLUSTER_DIR):
        self.dir = tempfile.mkdtemp(prefix="rllib_av_stack_")
        self.webhook = WebhookRecorder()
        self._procs: List[subprocess.Popen] = []
        try:
            self.am_port = free_port()
            self._start_alertmanager(cluster_dir, fast)
            self.prom_port = free_port()
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
            shutil.which("prometheus-alertmanager") or "alertmanager",
            f"--config.file={path}", f"--storage.path={self.dir}/am-data",
            f"--web.listen-address=127.0.0.1:{self.am_port}",
            "--cluster.listen-address=",  # no gossip: one local instance
        ], f"http://127.0.0.1:{self.am_port}/-/ready")

    def _start_prometheus(self, cluster_dir: str, exporter_targets: List[str], fast: bool) -> None:
        src = os.path.join(cluster_dir, "prometheus")
        with open(os.path.join(src, "prometheus.yml")) as f:
            cfg = yaml.safe_load(f)
        if fast:
            cfg["global"].update(scrape_interval="1s", evaluation_interval="1s")
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
        ], f"http://127.0.0.1:{self.prom_port}/-/ready")

    def query(self, expr: str) -> List[Dict]:
        url = f"{self.prom_url}/api/v1/query?" + urllib.parse.urlencode({"query": expr})
        return http_json(url)["data"]["result"]

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


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--exporter", default="127.0.0.1:9464")
    args = ap.parse_args()
    with LocalStack([args.exporter], fast=False) as stack:
        print(f"Prometheus {stack.prom_url}  Alertmanager {stack.am_url}  "
              f"webhook {stack.webhook.url}  (Ctrl-C stops)")
        seen = 0
        try:
            while True:
                time.sleep(1)
                alerts = stack.webhook.alerts()
                for a in alerts[seen:]:
                    print(a["path"], a["labels"].get("alertname"), a["annotations"].get("description"))
                seen = len(alerts)
        except KeyboardInterrupt:
            pass
