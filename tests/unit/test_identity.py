"""A worker's default id is a slot on its host that a restarted worker takes again: the lowest
slot no live process holds, released by the kernel however its holder dies."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

from streamserve.config import load_settings
from streamserve.runtime import identity

HOLDER = """
import sys
from pathlib import Path
from streamserve.runtime.identity import take_slot
fd, slot = take_slot(Path(sys.argv[1]), sys.argv[2])
print(slot, flush=True)
sys.stdin.read()  # hold it until killed
"""


def holder(directory: Path, group: str) -> tuple[subprocess.Popen[str], int]:
    """A process that takes a slot and keeps it; (the process, its slot)."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(directory), group],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    return proc, int(proc.stdout.readline())


def test_a_process_killed_leaves_its_slot_to_the_next_worker(tmp_path: Path) -> None:
    first, slot_0 = holder(tmp_path, "scorers")
    second, slot_1 = holder(tmp_path, "scorers")
    other_group, other = holder(tmp_path, "other group")
    assert (slot_0, slot_1, other) == (0, 1, 0)

    first.send_signal(signal.SIGKILL)
    first.wait(10)
    restarted, slot = holder(tmp_path, "scorers")

    assert slot == 0  # the killed worker's: the same worker id, the same transactional.id
    for proc in (second, other_group, restarted):
        proc.kill()
        proc.wait(10)


def test_workers_in_one_process_hold_different_slots_until_closed(tmp_path: Path) -> None:
    fd_0, slot_0 = identity.take_slot(tmp_path, "g")
    fd_1, slot_1 = identity.take_slot(tmp_path, "g")
    assert (slot_0, slot_1) == (0, 1)
    os.close(fd_0)
    fd_again, slot_again = identity.take_slot(tmp_path, "g")
    assert slot_again == 0
    os.close(fd_1)
    os.close(fd_again)


def test_the_default_worker_id_is_the_host_and_slot_and_the_operators_wins(
    tmp_path: Path,
) -> None:
    group = f"g-{os.getpid()}-{tmp_path.name}"
    settings = identity.with_worker_id(load_settings(group_id=group))
    assert settings.worker_id == identity.host_worker_id(group)  # kept for the process's life
    assert settings.worker_id is not None
    host, slot = settings.worker_id.rsplit("-", 1)
    assert host == socket.gethostname() and slot.isdigit()
    assert settings.effective_transactional_id == f"{group}-{settings.worker_id}"
    named = load_settings(group_id=group, worker_id="scorer-3")
    assert identity.with_worker_id(named) is named


def test_group_ids_of_any_characters_get_their_own_slots(tmp_path: Path) -> None:
    fd_a, slot_a = identity.take_slot(tmp_path, "team/a b")
    fd_b, slot_b = identity.take_slot(tmp_path, "team_a_b")  # the same once made safe
    assert (slot_a, slot_b) == (0, 0)
    os.close(fd_a)
    os.close(fd_b)


def test_without_a_writable_slot_directory_the_id_falls_back_to_the_pid(tmp_path: Path) -> None:
    blocked = tmp_path / "file"
    blocked.write_text("not a directory")
    worker_id = identity.host_worker_id(f"fallback-{tmp_path.name}", blocked / "slots")
    assert worker_id == f"{socket.gethostname()}-{os.getpid()}"
