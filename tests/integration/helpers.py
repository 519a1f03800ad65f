"""Running the `streamserve` command and feeding it load, for the integration tests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from prometheus_client.parser import text_string_to_metric_families

from streamserve.io.kafka import Cluster
from streamserve.tools.audit import AuditReport, audit
from streamserve_loadgen.world.embedded import free_port
from tests.integration.conftest import Scenario, wait_for

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def streamserve(
    *args: str, env: dict[str, str], command: str = "streamserve", cwd: Path | None = None
) -> subprocess.Popen[str]:
    """The `streamserve` command (or the harness's, ``command="streamserve_loadgen"``) in a child
    process that sees none of this process's STREAMSERVE_* variables, only ``env``."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSERVE_")}
    return subprocess.Popen(
        [sys.executable, "-m", command, *args],
        env={**clean, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
    )


def run(
    *args: str,
    env: dict[str, str],
    timeout: float = 60,
    command: str = "streamserve",
    cwd: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    proc = streamserve(*args, env=env, command=command, cwd=cwd)
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

    def text(self, wait_s: float = 0.0) -> str:
        """What the child wrote so far; ``wait_s``: first wait that long for its stderr to close
        (the child has exited: the last lines may still be in the pipe)."""
        self._thread.join(wait_s)
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


def get(port: int, path: str) -> tuple[int, str]:
    """(status, body) of a GET on a local worker's endpoint; (0, "") while nothing listens."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def scrape(port: int) -> Samples:
    """Every sample of a worker's /metrics as (name, sorted labels) -> value."""
    status, text = get(port, "/metrics")
    if status != 200:
        return {}
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


class Worker:
    """A `streamserve worker` child with its HTTP endpoint on a free port and its stderr kept."""

    def __init__(self, env: dict[str, str]) -> None:
        self.port = free_port()
        self.proc = streamserve("worker", env={**env, "STREAMSERVE_HTTP_PORT": str(self.port)})
        self.log = StderrLines(self.proc)

    def readiness(self) -> dict[str, object]:
        """What /readyz says now (an empty dict while the endpoint is not up)."""
        status, body = get(self.port, "/readyz")
        return json.loads(body) if status else {}

    def wait_ready(self, timeout_s: float = 60) -> None:
        """Until /readyz is ok: joined its group (partitions or not), model loaded."""
        wait_for(self._ready_or_exited, timeout_s, "the worker's /readyz")
        assert self.proc.poll() is None, f"the worker exited:\n{self.log.text()}"

    def _ready_or_exited(self) -> bool:
        return self.proc.poll() is not None or self.readiness().get("ok") is True

    def metric(self, name: str) -> float:
        """An unlabelled sample of /metrics (NaN while the endpoint is not up)."""
        return scrape(self.port).get((name, ()), float("nan"))

    def stop(self, timeout_s: float = 60) -> dict[str, Any]:
        """SIGTERM; asserts exit 0 and returns the summary line it printed."""
        self.proc.terminate()
        code = self.proc.wait(timeout=timeout_s)
        assert code == 0, f"exit code {code}:\n{self.log.text(wait_s=5)}"
        return dict(json.loads(self.proc.stdout.read()))  # type: ignore[union-attr]


def audited(scenario: Scenario) -> AuditReport:
    """The scenario's input matched with its outcomes, read_committed (as `streamserve audit`)."""
    s = scenario.settings
    return audit(Cluster.of(s), s.input_topic, s.predictions_topic, s.dead_letter_topic, 30)


def all_outcomes(scenario: Scenario, n_events: int) -> bool:
    """Whether every one of ``n_events`` inputs has an outcome."""
    report = audited(scenario)
    return report.events == n_events and report.lost == 0
