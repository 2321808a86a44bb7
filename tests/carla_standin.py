"""Stands in for CarlaUE4.sh in supervisor tests: a real process that listens.

Takes CARLA's port flags (-carla-rpc-port=P, -carla-streaming-port=S) and
ignores CARLA's other flags and the map argument. Like Unreal, it refuses to
run as root (after a start-up of its own, as the real one takes a while).
Its own flags:
  --record=PATH     append {"pid", "pgid", "child", "argv"} as a JSON line at start
  --child           run a child process too (CarlaUE4.sh starts the real binary as one)
  --never-listen    hang at startup without opening a port
  --exit-after=S    crash (exit 1) S seconds after listening
  --fail-first=PATH crash at startup when PATH does not exist yet (creating it): the
                    first launch fails, the next one works
"""

import json
import os
import socket
import subprocess
import sys
import time


def main(argv):
    opts = dict(a.lstrip("-").split("=", 1) if "=" in a else (a.lstrip("-"), "") for a in argv)
    if os.geteuid() == 0:
        time.sleep(1.0)
        print("Refusing to run with the root privileges.", flush=True)
        sys.exit(1)
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(3600)"]) \
        if "child" in opts else None
    if "record" in opts:
        with open(opts["record"], "a") as f:
            f.write(json.dumps(dict(pid=os.getpid(), pgid=os.getpgid(0),
                                    child=child and child.pid, argv=argv)) + "\n")
    if "fail-first" in opts and not os.path.exists(opts["fail-first"]):
        open(opts["fail-first"], "w").close()
        sys.exit(3)
    if "never-listen" in opts:
        while True:
            time.sleep(3600)
    socks = []
    for key in ("carla-rpc-port", "carla-streaming-port"):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", int(opts[key])))  # fails loudly on a port clash
        s.listen(16)
        s.settimeout(0.2)
        socks.append(s)
    deadline = time.monotonic() + float(opts.get("exit-after") or "inf")
    while time.monotonic() < deadline:
        for s in socks:
            try:
                s.accept()[0].close()
            except socket.timeout:
                pass
    sys.exit(1)


if __name__ == "__main__":
    main(sys.argv[1:])
