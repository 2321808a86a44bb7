"""Every command block of README.md runs as written, from the root of a fresh copy
of the repository, in README order (later blocks use the run the first one trained).

The blocks are parsed from README.md itself. A ```bash block runs as a bash
script unless the line above it says otherwise:

    <!-- readme-test: skip: <why it cannot run here> -->   (CARLA, Docker, the suite itself)
    <!-- readme-test: serves -->   runs until Ctrl-C: the test waits for the URLs it
                                     prints, fetches each, then sends Ctrl-C (SIGINT)

To fit CI's budget the test appends arguments to a few commands (BUDGET below):
fewer env steps, shorter and fewer episodes, and `monitoring.exporter_port=0` because
other runs on a shared machine may hold the default port. Nothing else changes.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass
from typing import Dict, List, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = os.path.join(ROOT, "README.md")

# (command regex, arguments appended to that command): CI-sized budgets.
_TRAIN_BUDGET = ("--set run.total_env_steps=192 --set training.learning_starts=64 "
                 "--set training.batch_size=32 --set env.max_episode_steps=50 "
                 "--set run.min_time_s_per_iteration=0 --set monitoring.exporter_port=0")
# A gymnasium id refuses DrivingEnv's keys (env.max_episode_steps among them).
_GYM_BUDGET = _TRAIN_BUDGET.replace(" --set env.max_episode_steps=50", "")
BUDGET = [
    (r"^make run\b", f"ARGS='{_TRAIN_BUDGET}'"),
    (r"^rllib-av preflight --config configs/custom_env\.yaml\b", f"--steps 192 {_GYM_BUDGET}"),
    (r"^rllib-av preflight\b", f"--steps 192 {_TRAIN_BUDGET}"),
    (r"^rllib-av train --resume\b", "--set run.total_env_steps=256 --set monitoring.exporter_port=0"),
    (r"^rllib-av evaluate\b", "--episodes 1 --videos 1"),
]
# Exit codes a command may end with besides 0, as README documents them.
ALSO_ALLOWED = [(r"^rllib-av preflight\b", (1,))]  # NO-GO
# What a command's output must show, as README describes it: training and
# preflight print a progress line with the target and the time left by default.
SHOWS = [(r"^(make run|rllib-av preflight|rllib-av train)\b", r"steps +[\d,]+/[\d,]+ \(.*\) ETA"),
         (r"^rllib-av preflight\b", r"\b(GO|NO-GO) +\(run: ")]
# Notices from dependencies that must not reach the user (rllib_av/dependency_noise.py).
NOISE = ("You are running TD3 on the new API stack", "RLModuleConfig object",
         "Install gputil", "Token authentication is enabled")
URL = re.compile(r"https?://(?:127\.0\.0\.1|localhost):\d+[^\s)]*")


@dataclass
class Block:
    index: int
    line: int  # 1-based line of the opening fence
    body: str
    mode: str  # run | serves | skip
    reason: str = ""

    @property
    def id(self) -> str:
        first = next((c for c in commands(self.body)), "")
        return f"L{self.line}:{first[:40]}"


def readme_blocks(text: str) -> List[Block]:
    lines = text.splitlines()
    blocks, i = [], 0
    while i < len(lines):
        fence = re.match(r"^```(\w*)\s*$", lines[i])
        if fence is None:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        if fence.group(1) in ("bash", "sh", "shell", "console"):
            prev = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
            marker = re.match(r"^<!-- readme-test: (skip|serves)(?::\s*(.*?))?\s*-->$", prev)
            mode, reason = (marker.group(1), marker.group(2) or "") if marker else ("run", "")
            blocks.append(Block(len(blocks), i + 1, "\n".join(lines[i + 1:end]), mode, reason))
        i = end + 1
    return blocks


def commands(body: str) -> List[str]:
    """Logical command lines (continuations joined), comments and blanks dropped."""
    out, pending = [], ""
    for raw in body.splitlines():
        line = pending + raw
        if line.rstrip().endswith("\\"):
            pending = line.rstrip()[:-1] + " "
            continue
        pending = ""
        code, _ = split_comment(line)
        if code.strip():
            out.append(code.strip())
    return out


def split_comment(line: str):
    """(code, comment): a '#' after whitespace and outside quotes starts a comment."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i:]
    return line.rstrip(), ""


def with_budget(command: str) -> str:
    for pattern, extra in BUDGET:
        if re.search(pattern, command):
            return f"{command} {extra}"
    return command


def script(block: Block) -> str:
    """The block as a bash script: each command with its budget, stopping at the
    first exit code README does not document."""
    lines = ["cd \"$(dirname \"$0\")\""]
    for cmd in commands(block.body):
        allowed = " ".join(str(c) for p, codes in ALSO_ALLOWED if re.search(p, cmd)
                           for c in codes)
        shown = cmd.replace("'", "")
        lines += [with_budget(cmd),
                  f"rc=$?; case ' 0 {allowed} ' in *' '$rc' '*) ;; *) "
                  f"echo 'README command failed (exit '$rc'): {shown}' >&2; exit $rc;; esac"]
    return "\n".join(lines) + "\n"


BLOCKS = readme_blocks(open(README).read())


def test_readme_has_runnable_blocks_and_every_skip_says_why():
    assert sum(b.mode == "run" for b in BLOCKS) >= 4 and any(b.mode == "serves" for b in BLOCKS)
    assert all(b.reason for b in BLOCKS if b.mode == "skip")
    # A marker must sit right above a command block, never in prose.
    text = open(README).read()
    assert text.count("<!-- readme-test:") == sum(b.mode != "run" for b in BLOCKS)


class Clone:
    """A copy of the working tree (tracked and unignored files) with the repo's
    .venv linked in; blocks run in it in README order, each at most once."""

    def __init__(self, path: str):
        self.path = path
        files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=ROOT,
                               capture_output=True, text=True, check=True).stdout.split()
        for rel in files:
            if os.path.isfile(os.path.join(ROOT, rel)):
                os.makedirs(os.path.dirname(os.path.join(path, rel)), exist_ok=True)
                shutil.copy2(os.path.join(ROOT, rel), os.path.join(path, rel))
        os.symlink(os.path.join(ROOT, ".venv"), os.path.join(path, ".venv"))
        self.results: Dict[int, subprocess.CompletedProcess] = {}

    def run_through(self, index: int) -> Optional[subprocess.CompletedProcess]:
        for block in BLOCKS[:index + 1]:
            if block.index not in self.results and block.mode != "skip":
                self.results[block.index] = (self._serve if block.mode == "serves"
                                             else self._run)(block)
        return self.results.get(index)

    def _write(self, block: Block) -> str:
        path = os.path.join(self.path, f".readme_block_{block.index}.sh")
        with open(path, "w") as f:
            f.write(script(block))
        return path

    def _run(self, block: Block) -> subprocess.CompletedProcess:
        return subprocess.run(["bash", self._write(block)], capture_output=True, text=True,
                              timeout=540, stdin=subprocess.DEVNULL)

    def _serve(self, block: Block) -> subprocess.CompletedProcess:
        proc = subprocess.Popen(["bash", self._write(block)], stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True,
                                stdin=subprocess.DEVNULL)
        out: List[str] = []
        reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
        reader.start()
        fetched: Dict[str, int] = {}
        seen, deadline = -1, time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            urls = URL.findall("".join(out))
            # Serving: it printed its URLs, each answers, and it has said all it says at start.
            if urls and len(out) == seen and all(fetched.get(u) == 200 for u in urls):
                break
            seen = len(out)
            for u in urls:
                if fetched.get(u) != 200:
                    try:
                        with urllib.request.urlopen(u, timeout=5) as r:
                            fetched[u] = r.status
                    except OSError:
                        pass
            time.sleep(2)
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)  # Ctrl-C in the terminal
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            pytest.fail(f"README block {block.id} did not stop on Ctrl-C:\n{''.join(out)[-3000:]}")
        reader.join(10)
        result = subprocess.CompletedProcess(proc.args, proc.returncode, "".join(out), "")
        result.urls = fetched
        return result


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    installed = os.path.join(ROOT, ".venv", ".installed")
    if not os.path.isfile(installed) or (os.path.getmtime(installed)
                                         < os.path.getmtime(os.path.join(ROOT, "pyproject.toml"))):
        pytest.fail("pyproject.toml is newer than .venv/.installed, so `make run` would "
                    "reinstall: run `make install` first")
    return Clone(str(tmp_path_factory.mktemp("readme_clone")))


@pytest.mark.slow
@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_readme_block_runs_as_written(request, block):
    if block.mode == "skip":
        pytest.skip(f"README says: {block.reason}")
    done = request.getfixturevalue("clone").run_through(block.index)
    output = done.stdout + done.stderr
    assert "Traceback" not in output, output[-4000:]
    assert not [n for n in NOISE if n in output], output[-4000:]
    if block.mode == "serves":
        assert done.urls and set(done.urls.values()) == {200}, output[-4000:]
        # Ctrl-C ends the command and the shell: exit 0, 130 or death by SIGINT.
        assert done.returncode in (0, 130, -signal.SIGINT), output[-4000:]
        for url in done.urls:  # stopped: nothing it started still answers
            with pytest.raises(OSError):
                urllib.request.urlopen(url, timeout=5)
    else:
        assert done.returncode == 0, output[-4000:]
    for cmd in commands(block.body):
        for pattern, shown in SHOWS:
            if re.search(pattern, cmd):
                assert re.search(shown, output), (cmd, shown, output[-4000:])
