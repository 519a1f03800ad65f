"""Every `streamserve` command on a plain `pip install` (no extras), as an operator gets it.

The suite itself runs with the dev extras, which would hide a dependency only they bring (PyYAML
once did: `streamserve model feast` died with ModuleNotFoundError). This test builds a venv with
nothing but the package and its own dependencies, and runs each command there against the
embedded broker and Redis.
"""

from __future__ import annotations

import os
import subprocess
import venv
from dataclasses import dataclass, field
from pathlib import Path

import click

from streamserve.cli import main
from streamserve_loadgen.world.embedded import free_port
from tests.integration.conftest import Scenario

ROOT = Path(__file__).resolve().parents[2]
FEAST_REPO = ROOT / "tests" / "unit" / "data" / "feast_stream_repo"


def plain_install(directory: Path) -> Path:
    """A venv with `pip install <this repository>` and nothing else; its python."""
    venv.create(directory, with_pip=True)
    python = directory / "bin" / "python"
    subprocess.run(
        [python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", str(ROOT)],
        check=True,
        timeout=600,
    )
    return python


def leaf_commands(group: click.Group, prefix: tuple[str, ...] = ()) -> set[tuple[str, ...]]:
    """Every command a user can run, as its words after `streamserve`."""
    found: set[tuple[str, ...]] = set()
    for name, command in group.commands.items():
        if isinstance(command, click.Group):
            found |= leaf_commands(command, (*prefix, name))
        else:
            found.add((*prefix, name))
    return found


@dataclass
class Case:
    """One run of a command: what it is given and what the user must see."""

    args: list[str]
    exit_code: int
    shows: str
    env: dict[str, str] = field(default_factory=dict)


def test_every_command_runs_on_a_plain_install(scenario: Scenario, tmp_path: Path) -> None:
    python = plain_install(tmp_path / "venv")
    for extra_module in ("faust", "fastavro", "daal4py", "psutil", "streamserve_loadgen"):
        probe = subprocess.run([python, "-c", f"import {extra_module}"], capture_output=True)
        assert probe.returncode != 0, f"{extra_module} is in the plain install"

    scenario.load_features(100, skip_every=10)
    scenario.preload(300, 100, malformed_every=50)
    env = scenario.env()
    bundle = str(scenario.bundle_dir)
    no_registry = f"http://127.0.0.1:{free_port()}"
    cases = [
        Case(["--version"], 0, "streamserve, version"),
        Case(["config"], 0, f"STREAMSERVE_INPUT_TOPIC={scenario.settings.input_topic}", env),
        Case(["schemas", "write", str(tmp_path / "schemas")], 0, "prediction.schema.json"),
        Case(["model", "check", bundle], 0, "features"),
        Case(["model", "schema", bundle], 0, '"$schema"'),
        Case(["model", "schema", bundle, "--format", "avro"], 0, '"type": "record"'),
        Case(["model", "schema", bundle, "--format", "protobuf"], 2, "streamserve[registry]"),
        # the demo bundle's store features are not in this repository: read, then refused
        Case(["model", "feast", bundle, "--repo", str(FEAST_REPO)], 3, "project sfvtest"),
        Case(["topics"], 0, "", env),
        Case(["worker"], 0, '"events": 300', env),
        Case(["lag"], 0, "total lag 0", env),
        Case(["audit"], 0, "OK", env),
        Case(["dead-letters", "count"], 0, "6 selected of 6 dead letters", env),
        Case(["dead-letters", "replay", "--to", f"replayed-{scenario.uid}"], 0, "dry run", env),
        Case(["probe"], 1, "", {"STREAMSERVE_HTTP_PORT": str(free_port())}),
        Case(["worker"], 2, "streamserve[faust]", {**env, "STREAMSERVE_RUNTIME": "faust"}),
        Case(["worker"], 2, "streamserve[onedal]", {**env, "STREAMSERVE_PREDICTOR": "onedal"}),
        Case(
            ["worker"],
            2,
            "streamserve[registry]",
            {
                **env,
                "STREAMSERVE_INPUT_FORMAT": "avro",
                "STREAMSERVE_SCHEMA_REGISTRY_URL": no_registry,
            },
        ),
    ]
    untried = [
        " ".join(words)
        for words in leaf_commands(main)
        if not any(tuple(case.args[: len(words)]) == words for case in cases)
    ]
    assert not untried, f"commands without a case here: {untried}"

    clean = {k: v for k, v in os.environ.items() if not k.startswith("STREAMSERVE_")}
    failures = []
    for case in cases:
        done = subprocess.run(
            [python, "-m", "streamserve", *case.args],
            env={**clean, **case.env},
            capture_output=True,
            text=True,
            timeout=180,
            cwd=tmp_path,
        )
        output = done.stdout + done.stderr
        if "Traceback" in output or done.returncode != case.exit_code or case.shows not in output:
            failures.append(f"streamserve {' '.join(case.args)}: exit {done.returncode}\n{output}")
    assert not failures, "\n\n".join(failures)
