"""docker-compose.yml cannot run here (no Docker engine), so it is checked statically: it parses,
its settings exist, its commands exist, Prometheus finds every worker and the dashboard's queries
name metrics the worker exports."""

import json
import re
import shlex
from itertools import takewhile
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from compose_spec import PyCompose

from streamserve.cli import main as streamserve_main
from streamserve.config import settings_env_names
from streamserve.config_env import RDKAFKA_PREFIX
from streamserve.telemetry.catalog import METRICS
from streamserve_loadgen.commands.cli import main as loadgen_main

ROOT = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
SERVICES = COMPOSE["services"]
OURS = [name for name, s in SERVICES.items() if s.get("build", {}).get("context") == "."]
DASHBOARD = json.loads((ROOT / "deploy/grafana/dashboards/streamserve.json").read_text())


def command_lines(service: dict) -> list[list[str]]:
    """Each command a service runs, as words: its command (a list, or `sh -c "a && b"`) and its
    health check."""
    found = []
    command = service.get("command")
    if isinstance(command, list):
        found.append(command)
    elif isinstance(command, str):
        script = shlex.split(command)[-1] if command.startswith("sh -c") else command
        found += [shlex.split(step) for step in script.split("&&")]
    test = service.get("healthcheck", {}).get("test", [])
    if test[:1] == ["CMD"]:
        found.append(test[1:])
    return found


def test_the_file_follows_the_compose_specification() -> None:
    """compose-spec (the Rust compose_spec crate's parser) refuses an unknown key, an unknown
    `restart` or `depends_on` condition, a malformed duration. YAML merge keys (`<<`) are
    resolved first, as Docker Compose does."""
    PyCompose.from_json(json.dumps(COMPOSE))
    misspelt = json.loads(json.dumps(COMPOSE))
    misspelt["services"]["worker"]["restrat"] = "always"
    with pytest.raises(ValueError, match="restrat"):
        PyCompose.from_json(json.dumps(misspelt))


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
    registry = SERVICES["schema-registry"]["environment"]
    registry_port = registry["SCHEMA_REGISTRY_LISTENERS"].rsplit(":", 1)[1]
    assert env["STREAMSERVE_SCHEMA_REGISTRY_URL"] == f"http://schema-registry:{registry_port}"
    assert registry["SCHEMA_REGISTRY_KAFKASTORE_BOOTSTRAP_SERVERS"].endswith(
        env["STREAMSERVE_KAFKA_BOOTSTRAP"]
    )
    assert "ports" not in SERVICES["worker"], "a fixed host port would break --scale worker=N"
    assert env["STREAMSERVE_CREATE_TOPICS"] == "false"
    assert "topics" in SERVICES["worker"]["depends_on"]


def test_images_are_official_and_pinned_and_ours_build_from_the_dockerfile() -> None:
    images = {name: s["image"] for name, s in SERVICES.items()}
    assert re.fullmatch(r"apache/kafka:\d+\.\d+\.\d+", images["kafka"])
    assert re.fullmatch(r"redis:7(\.\d+)*", images["redis"])
    assert re.fullmatch(r"confluentinc/cp-schema-registry:\d+\.\d+\.\d+", images["schema-registry"])
    assert re.fullmatch(r"prom/prometheus:v\d+\.\d+\.\d+", images["prometheus"])
    assert re.fullmatch(r"grafana/grafana:\d+\.\d+\.\d+", images["grafana"])
    assert set(OURS) == {"topics", "model-init", "worker", "loadgen"}
    dockerfile = (ROOT / "Dockerfile").read_text()
    for line in dockerfile.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (ROOT / source).exists(), f"Dockerfile copies missing {source}"


def test_worker_image_carries_no_harness_and_the_harness_has_its_own_target() -> None:
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.M)[1:]
    named = {stage.split("\n", 1)[0].split(" AS ")[-1].strip(): stage for stage in stages}
    assert set(named) == {"worker", "loadgen"}
    assert "loadgen" not in named["worker"].replace("streamserve-loadgen", "")
    assert re.search(r'pip install [^\n]*"\./loadgen\[bench\]"', named["loadgen"])
    targets = {name: SERVICES[name]["build"]["target"] for name in OURS}
    assert targets == {
        "topics": "worker",
        "worker": "worker",
        "model-init": "loadgen",
        "loadgen": "loadgen",
    }


def test_commands_name_cli_commands_that_exist() -> None:
    runner = CliRunner()
    checked = 0
    for name, service in SERVICES.items():
        for words in command_lines(service):
            if not words or words[0] not in ("streamserve", "streamserve-loadgen"):
                continue
            main = streamserve_main if words[0] == "streamserve" else loadgen_main
            subcommand = list(takewhile(re.compile(r"[a-z][a-z-]*").fullmatch, words[1:]))[:2]
            result = runner.invoke(main, [*subcommand, "--help"])
            assert result.exit_code == 0, f"{name}: `{shlex.join(words)}` is not a command"
            options = {w.split("=")[0] for w in words if w.startswith("--")}
            for option in options:
                assert option in result.output, f"{name}: no option {option}"
            checked += 1
    assert checked >= 6


def test_prometheus_scrapes_every_worker_replica_on_its_http_port() -> None:
    config = yaml.safe_load((ROOT / "deploy/prometheus.yml").read_text())
    (job,) = config["scrape_configs"]
    (discovery,) = job["dns_sd_configs"]
    assert discovery["names"] == ["worker"] and discovery["type"] == "A"
    assert str(discovery["port"]) == SERVICES["worker"]["environment"]["STREAMSERVE_HTTP_PORT"]
    assert SERVICES["worker"]["expose"] == [str(discovery["port"])]
    mounts = SERVICES["prometheus"]["volumes"]
    assert "./deploy/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in mounts


def exported_metric_names() -> set[str]:
    """Every sample name the catalog makes a worker export (the registry exports exactly the
    catalog: test_telemetry), plus the process collector's."""
    suffixes = {"counter": ["_total"], "gauge": [""], "histogram": ["_bucket", "_sum", "_count"]}
    names = {m.name + suffix for m in METRICS for suffix in suffixes[m.kind]}
    return names | {"process_resident_memory_bytes", "process_cpu_seconds_total"}


@pytest.mark.parametrize("panel", DASHBOARD["panels"], ids=lambda p: p["title"])
def test_dashboard_queries_name_metrics_the_worker_exports(panel: dict) -> None:
    exported = exported_metric_names()
    for target in panel["targets"]:
        names = set(re.findall(r"\b((?:streamserve|process)_[a-z_]+)\b", target["expr"]))
        assert names, f"{panel['title']}: no worker metric in {target['expr']}"
        assert names <= exported, f"{panel['title']}: not exported: {names - exported}"


def test_dashboard_covers_what_operators_watch_and_is_provisioned() -> None:
    exprs = " ".join(t["expr"] for p in DASHBOARD["panels"] for t in p["targets"])
    for needed in (
        "streamserve_events_total",
        "streamserve_consumer_lag_records",
        "streamserve_end_to_end_latency_seconds_bucket",
        "streamserve_batch_size",
        "streamserve_dead_letters_total",
    ):
        assert needed in exprs
    assert "histogram_quantile(0.5," in exprs and "histogram_quantile(0.99," in exprs
    for needed in (
        "streamserve_model_predictions_total",
        "streamserve_model_reloads_total",
        "streamserve_feature_age_seconds_bucket",
        "streamserve_feature_store_stale_total",
    ):
        assert needed in exprs  # model version, reloads and staleness have panels
    datasources = yaml.safe_load(
        (ROOT / "deploy/grafana/provisioning/datasources/prometheus.yml").read_text()
    )["datasources"]
    variable = next(v for v in DASHBOARD["templating"]["list"] if v["type"] == "datasource")
    assert variable["query"] == "prometheus"  # any Prometheus data source can be picked
    assert variable["current"]["value"] in {d["uid"] for d in datasources}  # provisioned default
    uses = {t["datasource"]["uid"] for p in DASHBOARD["panels"] for t in [p, *p["targets"]]}
    assert uses == {"${" + variable["name"] + "}"}
    assert datasources[0]["url"] == "http://prometheus:9090"
    for mount in SERVICES["grafana"]["volumes"]:
        source = mount.split(":")[0]
        assert (ROOT / source).exists(), f"grafana mounts missing {source}"


def test_workers_restart_and_need_the_registry_only_when_it_runs() -> None:
    from streamserve.runtime.confluent import SHUTDOWN_FLUSH_S

    worker = SERVICES["worker"]
    assert worker["restart"] == "on-failure"
    grace = float(worker["stop_grace_period"].removesuffix("s"))
    assert grace > 2 * SHUTDOWN_FLUSH_S  # the drain: both producers flush
    assert SERVICES["schema-registry"]["profiles"] == ["registry"]
    for name in OURS:
        needs = SERVICES[name].get("depends_on", {})
        if "schema-registry" in needs:
            assert needs["schema-registry"]["required"] is False, name
