"""A worker's default identity, stable across restarts on one host: ``<hostname>-<slot>``.

The slot is the lowest number that no live worker process of the same consumer group holds on
this host: a lock file per slot (``flock``) that the process keeps until it dies, SIGKILL
included, when the kernel releases it. So a worker restarted after a crash takes the slot its
predecessor held, comes back with the same worker id and, under exactly-once, the same
``transactional.id``: its ``init_transactions`` fences the dead producer and aborts the
transaction it left open, instead of every partition's last stable offset waiting for the
broker's ``transaction.timeout.ms``. Several workers on one host (``--processes N``, several
``streamserve worker`` commands) get slots 0, 1, 2...; in a container or pod (its own /tmp,
its own hostname, a StatefulSet's pod name) a worker is ``<pod>-0``.

STREAMSERVE_WORKER_ID set by the operator wins and takes no slot. The lock files live in
``<temp dir>/streamserve-slots-<uid>/`` (``TMPDIR`` moves it); where they cannot be written,
the id falls back to ``<hostname>-<pid>``, with a warning: a restart then is a new identity.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import socket
import tempfile
from pathlib import Path

from streamserve.config import Settings

log = logging.getLogger("streamserve.identity")

MAX_SLOTS = 4096
_held: dict[str, tuple[int, str]] = {}  # group id -> (lock file descriptor, worker id)


def slot_directory() -> Path:
    return Path(tempfile.gettempdir()) / f"streamserve-slots-{os.getuid()}"


def worker_id(settings: Settings) -> str:
    """STREAMSERVE_WORKER_ID, else this process's slot on this host (taken on the first call
    for the group and kept for the life of the process)."""
    return settings.worker_id or host_worker_id(settings.group_id)


def with_worker_id(settings: Settings) -> Settings:
    """``settings`` with ``worker_id`` filled in (for the clients, logs and metrics)."""
    if settings.worker_id is not None:
        return settings
    return settings.model_copy(update={"worker_id": worker_id(settings)})


def host_worker_id(group_id: str, directory: Path | None = None) -> str:
    """``<hostname>-<slot>``: this process's slot among the group's workers on this host."""
    held = _held.get(group_id)
    if held is not None:
        return held[1]
    hostname = socket.gethostname() or "worker"
    try:
        fd, slot = take_slot(directory or slot_directory(), group_id)
    except OSError as exc:
        fallback = f"{hostname}-{os.getpid()}"
        log.warning(
            "no worker slot on this host (%s): worker id %s is new at every restart; set "
            "STREAMSERVE_WORKER_ID to keep it (under exactly-once a restart then fences "
            "its predecessor at once)",
            exc,
            fallback,
        )
        return fallback
    worker_id = f"{hostname}-{slot}"
    _held[group_id] = (fd, worker_id)
    return worker_id


def take_slot(directory: Path, group_id: str) -> tuple[int, int]:
    """Lock the lowest free slot of ``group_id`` in ``directory``; (open descriptor, slot).
    The lock lasts while the descriptor is open: until the process ends, however it ends."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    prefix = _file_prefix(group_id)
    for slot in range(MAX_SLOTS):
        fd = os.open(directory / f"{prefix}-{slot}.lock", os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            continue
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())  # who holds it, for a curious operator
        return fd, slot
    raise OSError(f"all {MAX_SLOTS} worker slots of group {group_id!r} are held")


def _file_prefix(group_id: str) -> str:
    """A file name for any group id: its safe characters, and a hash that keeps ids that differ
    only in the others apart."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", group_id)[:80]
    return f"{safe}-{hashlib.sha256(group_id.encode()).hexdigest()[:8]}"
