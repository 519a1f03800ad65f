"""`streamserve worker --processes N`: N worker processes in one consumer group on this host.

Each child is a plain `streamserve worker` with its own HTTP port (``STREAMSERVE_HTTP_PORT + i``)
and worker id: ``<id>-<i>`` when STREAMSERVE_WORKER_ID is set, else the slot each child takes on
this host (runtime/identity.py), which a restarted set takes again. The group protocol spreads
the partitions over them. SIGTERM or
SIGINT is passed to every child, each finishes its batch and commits. If a child fails, the others
are stopped too and the supervisor exits with the child's code, so an orchestrator restarts the
whole set; children that finish normally (idle exit, max events) just end.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from typing import Any

from streamserve.config import Settings
from streamserve.config_env import RDKAFKA_PREFIX, env_name
from streamserve.errors import ConfigError

log = logging.getLogger("streamserve.runtime.processes")
STOP_GRACE_S = 60.0  # a child still running this long after SIGTERM is killed


def die_with_parent() -> None:
    """Child pre-exec hook (Linux): the child gets SIGTERM if the process that started it dies,
    even by SIGKILL, so no worker or server outlives its supervisor."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def refuse_shared_member_id(settings: Settings, processes: int) -> None:
    """A group.instance.id set for the whole set would be every child's: each would fence the
    others. STREAMSERVE_STATIC_MEMBERSHIP gives each its own (its worker id)."""
    for scope, options in (("", settings.rdkafka_common), ("CONSUMER_", settings.rdkafka_consumer)):
        if "group.instance.id" in options:
            raise ConfigError(
                f"{RDKAFKA_PREFIX}{scope}GROUP_INSTANCE_ID would be the static member id of all "
                f"{processes} processes (each would fence the others): unset it and set "
                "STREAMSERVE_STATIC_MEMBERSHIP=true, which gives each process its own"
            )


def child_env(settings: Settings, index: int, overrides: dict[str, Any]) -> dict[str, str]:
    """The environment of child ``index``: ours, the command-line overrides, its port, and its
    id when the operator named the set (else the child takes a slot of its own)."""
    env = dict(os.environ)
    for name, value in overrides.items():
        if value is not None:
            env[env_name(name)] = str(value)
    if settings.worker_id is not None:
        env[env_name("worker_id")] = f"{settings.worker_id}-{index}"
    env[env_name("http_port")] = str(settings.http_port + index if settings.http_port else 0)
    return env


def run_processes(settings: Settings, count: int, overrides: dict[str, Any]) -> int:
    """Run ``count`` workers until all have ended; returns the exit code for the supervisor."""
    argv = [sys.executable, "-m", "streamserve", "worker"]
    children = [
        subprocess.Popen(argv, env=child_env(settings, i, overrides), preexec_fn=die_with_parent)
        for i in range(count)
    ]
    log.info("started %d worker processes: pids %s", count, [c.pid for c in children])
    stopping = False

    def stop_all(*_: object) -> None:
        nonlocal stopping
        stopping = True
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, stop_all)
    failed = 0
    stop_deadline: float | None = None
    while any(c.poll() is None for c in children):
        for i, child in enumerate(children):
            code = child.poll()
            if code and not failed and not stopping:
                failed = _exit_code(code)
                log.error(
                    "worker process %d (pid %d) exited with %d: stopping the others",
                    i,
                    child.pid,
                    code,
                )
                stop_all()
        if stopping and stop_deadline is None:
            stop_deadline = time.monotonic() + STOP_GRACE_S
        if stop_deadline is not None and time.monotonic() > stop_deadline:
            for child in children:
                child.kill()
        time.sleep(0.1)
    codes = [c.returncode for c in children]
    log.info("worker processes ended with %s", codes)
    return failed or next((_exit_code(c) for c in codes if c), 0)


def _exit_code(returncode: int) -> int:
    """A child's exit code; killed by a signal (negative) counts as 1."""
    return returncode if returncode > 0 else 1
