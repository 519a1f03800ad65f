"""Child processes of a load run: the worker, the pass-through, the producer and the watcher.

Each runs in its own process so that none of them skews another's latency through the GIL. A
child prints one JSON line on stdout when it ends and logs on stderr. A worker is ready when its
/readyz says so (partitions assigned, model loaded, feature store reachable); the harness's own
tools (pass-through, bare loop, watcher, proxy) print a given line when they are.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from streamserve_loadgen.load.profile import RateProfile
from streamserve_loadgen.world.embedded import free_port

STREAMSERVE_ENV_PREFIX = "STREAMSERVE_"


def child_env(settings_env: dict[str, str]) -> dict[str, str]:
    """This process's environment without its STREAMSERVE_* variables, plus ``settings_env``.
    Workers started this way serve no HTTP endpoint unless ``settings_env`` gives a port (several
    on one host would want the same default port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(STREAMSERVE_ENV_PREFIX)}
    env["STREAMSERVE_HTTP_PORT"] = "0"
    env.update(settings_env)
    return env


def streamserve_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamserve", *args]


def loadgen_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "streamserve_loadgen", *args]


def producer_argv(
    bootstrap: str,
    topic: str,
    profile: RateProfile,
    entities: int,
    malformed_every: int,
    seed: int | None = None,
    linger_ms: float | None = None,
) -> list[str]:
    """The command line of a `streamserve-loadgen produce` child offering ``profile``."""
    argv = loadgen_argv(
        "produce",
        "--bootstrap",
        bootstrap,
        "--input-topic",
        topic,
        "--profile",
        profile.kind,
        "--rate",
        str(profile.rate),
        "--peak",
        str(profile.peak),
        "--seconds",
        str(profile.seconds),
        "--burst-every-s",
        str(profile.burst_every_s),
        "--burst-s",
        str(profile.burst_s),
        "--entities",
        str(entities),
        "--malformed-every",
        str(malformed_every),
    )
    if seed is not None:
        argv += ["--seed", str(seed)]
    if linger_ms is not None:
        argv += ["--linger-ms", str(linger_ms)]
    return argv


@dataclass
class Child:
    """A running child process whose stderr is kept (last lines) and watched for readiness."""

    name: str
    proc: subprocess.Popen[bytes]
    ready_text: str
    ready_url: str | None = None  # a worker's /readyz: asked instead of watching the log
    log_tail: deque[str] = field(default_factory=lambda: deque(maxlen=40))
    ready: threading.Event = field(default_factory=threading.Event)

    def _read_stderr(self) -> None:
        assert self.proc.stderr is not None
        for raw in self.proc.stderr:
            line = raw.decode(errors="replace").rstrip()
            self.log_tail.append(line)
            if self.ready_text in line and "assigned nothing" not in line:
                self.ready.set()

    def wait_ready(self, timeout_s: float = 60.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not (self._says_ready() if self.ready_url else self.ready.wait(0.1)):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} did not become ready:\n{self.tail()}")
            if self.ready_url:
                time.sleep(0.1)

    def _says_ready(self) -> bool:
        assert self.ready_url is not None
        try:
            with urllib.request.urlopen(self.ready_url, timeout=2) as response:
                return bool(json.loads(response.read()).get("ok"))
        except OSError:  # not listening yet, or 503: not ready
            return False

    def result(self, timeout_s: float = 600.0) -> dict[str, Any]:
        """Wait for the exit and return the JSON line it printed last."""
        out, _ = self.proc.communicate(timeout=timeout_s)
        lines = [line for line in out.decode().splitlines() if line.startswith("{")]
        if self.proc.returncode != 0 or not lines:
            raise RuntimeError(f"{self.name} exited with {self.proc.returncode}:\n{self.tail()}")
        return dict(json.loads(lines[-1]))

    def stop(self, timeout_s: float = 60.0) -> dict[str, Any]:
        """SIGTERM (finish the batch in hand, commit, print the summary) and return its JSON."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return self.result(timeout_s)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def tail(self) -> str:
        time.sleep(0.2)  # let the reader thread catch the last lines
        return "\n".join(self.log_tail)


def spawn(name: str, argv: list[str], env: dict[str, str], ready_text: str = "assigned") -> Child:
    """Start a child; a `streamserve worker` gets an HTTP port (unless ``env`` gives one), so its
    readiness can come from /readyz."""
    ready_url = None
    if argv[1:] == streamserve_argv("worker")[1:]:
        if env.get("STREAMSERVE_HTTP_PORT", "0") == "0":
            env = {**env, "STREAMSERVE_HTTP_PORT": str(free_port())}
        ready_url = f"http://127.0.0.1:{env['STREAMSERVE_HTTP_PORT']}/readyz"
    proc = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    child = Child(name, proc, ready_text, ready_url)
    threading.Thread(target=child._read_stderr, name=f"{name}-stderr", daemon=True).start()
    return child
