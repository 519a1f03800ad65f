"""docker-compose.yml cannot run here (no Docker engine), so it is checked statically."""

import re
import shlex
from itertools import takewhile
from pathlib import Path

import yaml
from click.testing import CliRunner

from loadgen.cli import main as loadgen_main
from streamserve.cli import main as streamserve_main
from streamserve.config import RDKAFKA_PREFIX, settings_env_names

COMPOSE = yaml.safe_load((Path(__file__).resolve().parents[2] / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]


def test_every_streamserve_variable_is_a_real_setting() -> None:
    known = set(settings_env_names())
    for name, service in SERVICES.items():
        for var in service.get("environment", {}):
            if var.startswith("STREAMSERVE_"):
                assert var in known or var.startswith(RDKAFKA_PREFIX), f"{name}: unknown {var}"


def test_workers_point_at_the_compose_kafka_and_redis() -> None:
    env = SERVICES["worker"]["environment"]
    kafka_port = SERVICES["kafka"]["environment"]["KAFKA_LISTENERS"].split(",")[0].rsplit(":", 1)[1]
    assert env["STREAMSERVE_KAFKA_BOOTSTRAP"] == f"kafka:{kafka_port}"
    assert env["STREAMSERVE_REDIS_URL"].startswith("redis://redis:6379")
    assert "ports" not in SERVICES["worker"], "a fixed host port would break --scale worker=N"


def test_images_are_official_and_pinned() -> None:
    images = {name: s["image"] for name, s in SERVICES.items()}
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", images["kafka"])
    assert re.fullmatch(r"redis:7(\.\d+)*", images["redis"])
    assert {images[n] for n in ("worker", "model-init", "loadgen")} == {"python:3.11-slim"}


def test_commands_name_cli_commands_that_exist() -> None:
    runner = CliRunner()
    for name, service in SERVICES.items():
        command = service.get("command")
        if not isinstance(command, str):
            continue
        for step in re.split(r"&&", command.split('"')[1]):
            words = shlex.split(step)
            if words and words[0] == "exec":
                words = words[1:]
            if not words or words[0] not in ("streamserve", "streamserve-loadgen"):
                continue
            main = streamserve_main if words[0] == "streamserve" else loadgen_main
            subcommand = list(takewhile(str.isalpha, words[1:]))[:2]
            result = runner.invoke(main, [*subcommand, "--help"])
            assert result.exit_code == 0, f"{name}: `{step.strip()}` is not a command"
