"""``/metrics`` served from a small process of its own (issue 8.6).

Scrapes handled in the training driver would take its GIL and CPU from
training. So the driver renders the page once per change and sends the bytes
down this process's stdin; the process answers every scrape with the latest
page. It imports only the standard library (starting it costs ~50 ms, not a
re-import of the driver's torch and Ray) and exits on stdin's EOF: the driver's
``close()``, or the driver's death by any means, SIGKILL included, since the
kernel then closes the pipe.

Wire format, driver to server: a 4-byte big-endian length, then that many bytes
of page. Server to driver, once: the bound port on a line, or ``error: ...``.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_LENGTH = struct.Struct(">I")
logger = logging.getLogger(__name__)


class MetricsServerError(OSError):
    """The server could not listen on the address it was given."""


class MetricsServer:
    """The driver's handle on the server process: ``port`` (the bound one),
    ``publish(page)``, ``close()``."""

    def __init__(self, host: str, port: int, page: bytes, content_type: str):
        # -I: stdlib only, so the driver's environment (PYTHONPATH, ...) has no say.
        self._proc = subprocess.Popen(
            [sys.executable, "-I", __file__, host, str(port), content_type],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self._alive = True
        self.publish(page)  # the server reads it before binding: served from the first scrape on
        line = self._proc.stdout.readline().decode().strip()
        self._proc.stdout.close()
        if not line.isdigit():
            self.close()
            raise MetricsServerError(f"cannot listen on {host}:{port}: "
                                     f"{line.removeprefix('error: ') or 'server did not start'}")
        self.port = int(line)

    def publish(self, page: bytes) -> None:
        if not self._alive:
            return
        try:  # one write per frame: frames from two threads never interleave
            self._proc.stdin.write(_LENGTH.pack(len(page)) + page)
            self._proc.stdin.flush()
        except BrokenPipeError:
            # Killed (OOM, by hand): training goes on, Prometheus sees the target down.
            self._alive = False
            logger.error("metrics server (pid %d) exited; /metrics is down", self._proc.pid)

    def close(self) -> None:
        if not self._proc.stdin.closed:
            self._proc.stdin.close()
        self._proc.wait()


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path.split("?")[0] != "/metrics":
            self.send_error(404)
            return
        page = self.server.page
        self.send_response(200)
        self.send_header("Content-Type", self.server.content_type)
        self.send_header("Content-Length", str(len(page)))
        self.end_headers()
        self.wfile.write(page)

    def log_message(self, format, *args) -> None:
        pass  # one line per scrape would flood the driver's stderr


def _read_page(stdin) -> bytes:
    header = stdin.read(_LENGTH.size)
    if len(header) == _LENGTH.size:
        (n,) = _LENGTH.unpack(header)
        page = stdin.read(n)
        if len(page) == n:
            return page
    os._exit(0)  # EOF: the driver closed us or is gone; in-flight scrapes go with us


def _read_pages(server: ThreadingHTTPServer, stdin) -> None:
    while True:
        server.page = _read_page(stdin)


def _bind(host: str, port: int) -> ThreadingHTTPServer:
    # IPv6 hosts too, as prometheus_client's own server does.
    family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    return type("Server", (ThreadingHTTPServer,), {"address_family": family})(address, _Handler)


def main(host: str, port: str, content_type: str) -> None:
    # Ctrl-C reaches the whole process group; the driver decides when we stop.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stdin = sys.stdin.buffer
    page = _read_page(stdin)
    try:
        server = _bind(host, int(port))
    except OSError as e:
        print(f"error: {e.strerror or e}", flush=True)
        return
    server.page, server.content_type = page, content_type
    print(server.server_port, flush=True)
    threading.Thread(target=_read_pages, args=(server, stdin), daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main(*sys.argv[1:])
