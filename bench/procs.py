"""Worker processes under measurement: start `python -m worker run`, read what Linux says of them.

RSS and CPU come from /proc; bytes received from the broker from `ss -tni` (the kernel's
`bytes_received` of each of the process's connections to the broker's port), so nothing in the
worker is instrumented and the figures are the process's own.
"""

from __future__ import annotations

import ctypes
import itertools
import json
import os
import re
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench.stack import Topics

_PAGE = os.sysconf("SC_PAGE_SIZE")
_TICKS = os.sysconf("SC_CLK_TCK")
_SS_PEER = re.compile(r"\s(\S+):(\d+)\s+(\S+):(\d+)\s")
_SS_PID = re.compile(r"pid=(\d+),")
_SS_RECEIVED = re.compile(r"bytes_received:(\d+)")


def die_with_parent() -> None:
    """preexec_fn: Linux SIGTERMs the child when the bench dies, however it dies."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def rss_bytes(pid: int) -> int:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE


def cpu_seconds(pid: int) -> float:
    """utime + stime of the process (all its threads)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS


def received_from(pid: int, port: int) -> dict[str, int]:
    """bytes_received per connection of `pid` to local `port`, keyed by the local address."""
    out = subprocess.run(
        ["ss", "-tnpiH", "state", "established", f"( dport = :{port} )"],
        capture_output=True,
        text=True,
        check=True,
        timeout=10,
    ).stdout
    counts: dict[str, int] = {}
    lines = out.splitlines()
    # ss prints each socket on one line and its TCP info on the next (indented) line.
    for head, info in itertools.pairwise(lines):
        peer, owner = _SS_PEER.search(" " + head), _SS_PID.search(head)
        got = _SS_RECEIVED.search(info)
        if peer and owner and int(owner.group(1)) == pid:
            counts[f"{peer.group(1)}:{peer.group(2)}"] = int(got.group(1)) if got else 0
    return counts


def worker_env(
    bootstrap: str, endpoint: str, topics: Topics, per_second: float, **extra: str
) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("SIGNOUT_")}
    env.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
            "SIGNOUT_KAFKA__BOOTSTRAP_SERVERS": bootstrap,
            "SIGNOUT_KAFKA__TOPIC": topics.topic,
            "SIGNOUT_KAFKA__DLQ_TOPIC": topics.dlq,
            "SIGNOUT_KAFKA__GROUP_ID": topics.group,
            "SIGNOUT_KAFKA__SESSION_TIMEOUT_MS": "10000",
            "SIGNOUT_COGNITO__ENDPOINT_URL": endpoint,
            "SIGNOUT_COGNITO__REGION": "us-east-1",
            "SIGNOUT_RATE__PER_SECOND": str(per_second),
            "SIGNOUT_HTTP__HOST": "127.0.0.1",
            "SIGNOUT_HTTP__PORT": "0",
            "SIGNOUT_SHUTDOWN_TIMEOUT_SECONDS": "10",
        }
    )
    env.update(extra)
    return env


@dataclass
class Sample:
    at: float  # time.monotonic() of this process (the same clock as the stub's `mono`)
    rss: int
    cpu: float


class WorkerProc:
    """One worker in its own process group, its JSON log in a file."""

    def __init__(self, env: dict[str, str], log_path: Path, *args: str) -> None:
        self.log_path = log_path
        with log_path.open("ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "worker", "run", *args],
                env=env,
                stdout=log,
                stderr=log,
                start_new_session=True,
                preexec_fn=die_with_parent,
            )
        self.pid = self.proc.pid
        self.started = time.monotonic()

    def sample(self) -> Sample:
        return Sample(time.monotonic(), rss_bytes(self.pid), cpu_seconds(self.pid))

    def log_lines(self) -> list[dict[str, Any]]:
        lines = self.log_path.read_text(errors="replace").splitlines()
        return [json.loads(line) for line in lines if line.startswith("{")]

    def count(self, *messages: str) -> int:
        return sum(1 for line in self.log_lines() if line.get("msg") in messages)

    def assigned(self) -> bool:
        """The worker holds partitions (its `rate share` line names more than zero)."""
        shares = [line for line in self.log_lines() if line.get("msg") == "rate share"]
        return bool(shares) and int(shares[-1].get("partitions", 0)) > 0

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, within: float = 20.0) -> int:
        """SIGTERM (the worker drains), then SIGKILL to the whole group after `within` seconds."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                return self.proc.wait(within)
            except subprocess.TimeoutExpired:
                pass
        self.kill()
        return self.proc.wait()

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait()
