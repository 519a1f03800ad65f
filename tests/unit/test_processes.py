"""`worker --processes N`: what each child process is told."""

from pathlib import Path

import pytest

from streamserve.config import load_settings
from streamserve.runtime.processes import child_env


def test_each_child_gets_its_own_id_and_port_and_the_command_line_overrides(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("STREAMSERVE_MAX_EVENTS", raising=False)
    settings = load_settings(worker_id="host-1", http_port=9400)
    overrides = {"model_dir": Path("/models/m"), "max_events": None, "exit_when_idle_s": 2.0}
    first, second = (child_env(settings, i, overrides) for i in range(2))
    assert [first["STREAMSERVE_WORKER_ID"], second["STREAMSERVE_WORKER_ID"]] == [
        "host-1-0",
        "host-1-1",
    ]
    assert [first["STREAMSERVE_HTTP_PORT"], second["STREAMSERVE_HTTP_PORT"]] == ["9400", "9401"]
    assert first["STREAMSERVE_MODEL_DIR"] == "/models/m"
    assert first["STREAMSERVE_EXIT_WHEN_IDLE_S"] == "2.0"
    assert "STREAMSERVE_MAX_EVENTS" not in first  # not given: the child's own default applies


def test_an_endpoint_turned_off_stays_off_in_every_child() -> None:
    settings = load_settings(worker_id="w", http_port=0)
    assert {child_env(settings, i, {})["STREAMSERVE_HTTP_PORT"] for i in range(3)} == {"0"}


def test_without_a_worker_id_each_child_takes_a_slot_of_its_own() -> None:
    settings = load_settings(http_port=9400)
    assert all("STREAMSERVE_WORKER_ID" not in child_env(settings, i, {}) for i in range(2))
