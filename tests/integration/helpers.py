"""Running the `streamserve` command and feeding it load, for the integration tests."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

from confluent_kafka import Producer

from tests.integration.conftest import Scenario


def streamserve(*args: str, env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSERVE_")}
    return subprocess.Popen(
        [sys.executable, "-m", "streamserve", *args],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    proc = streamserve(*args, env=env)
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


class StderrLines:
    """Collects a child's stderr on a thread, so the test can wait for a log line."""

    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self._lines: list[str] = []
        self._thread = threading.Thread(target=self._read, args=(proc,), daemon=True)
        self._thread.start()

    def _read(self, proc: subprocess.Popen[str]) -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            self._lines.append(line)

    def text(self) -> str:
        return "".join(self._lines)


def produce_steadily(scenario: Scenario, events: list[tuple[bytes, bytes]], per_s: int) -> None:
    """Produce ``events`` at about ``per_s`` events per second, in 50 ms slices."""
    producer = Producer({"bootstrap.servers": scenario.stack.kafka_bootstrap, "linger.ms": 5})
    chunk = per_s // 20
    for start in range(0, len(events), chunk):
        began = time.monotonic()
        for key, value in events[start : start + chunk]:
            producer.produce(scenario.settings.input_topic, value, key)
        producer.flush(10)
        time.sleep(max(0.05 - (time.monotonic() - began), 0))
    assert producer.flush(30) == 0
