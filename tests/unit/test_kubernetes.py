"""deploy/kubernetes, checked statically: no cluster runs here.

Core objects against the Kubernetes API's own JSON Schemas (kubernetes-validate, strict: an
unknown field fails); KEDA's ScaledObject and the Prometheus operator's ServiceMonitor and
PrometheusRule against models generated from their CRDs (cloudcoil), where a field the CRD does
not know is dropped and fails the round trip. Then what ties the objects together: selectors,
names, ports, settings, metrics.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cloudcoil.models.keda import v1alpha1 as keda
from cloudcoil.models.prometheus_operator import v1 as monitoring
from pydantic import BaseModel

from streamserve.config import load_settings
from streamserve.runtime.confluent import SHUTDOWN_FLUSH_S
from streamserve.telemetry.catalog import METRICS

ROOT = Path(__file__).resolve().parents[2]
BASE = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")  # the oldest and newest minor the schemas cover here
CUSTOM: dict[str, type[BaseModel]] = {
    "ScaledObject": keda.ScaledObject,
    "ServiceMonitor": monitoring.ServiceMonitor,
    "PrometheusRule": monitoring.PrometheusRule,
}


def kustomization() -> dict[str, Any]:
    return dict(yaml.safe_load((BASE / "kustomization.yaml").read_text()))


OVERLAYS = sorted((BASE / "overlays").iterdir())


def rendered(overlay: Path | None = None) -> dict[str, dict[str, Any]]:
    """Each object by kind, with the labels the kustomization adds and, with ``overlay``, its
    patches merged in (what `kubectl apply -k` sends for the strategic-merge patches of maps
    used here; kustomize's other transformers are not used)."""
    added: dict[str, str] = {}
    for entry in kustomization()["labels"]:
        added |= entry["pairs"]
    objects = {}
    for name in kustomization()["resources"]:
        for document in yaml.safe_load_all((BASE / name).read_text()):
            metadata = document["metadata"]
            metadata["labels"] = {**metadata.get("labels", {}), **added}
            objects[document["kind"]] = document
    if overlay is not None:
        layer = yaml.safe_load((overlay / "kustomization.yaml").read_text())
        assert layer["resources"] == ["../.."]  # the base
        for patch in layer["patches"]:
            change = yaml.safe_load((overlay / patch["path"]).read_text())
            target = objects[change["kind"]]
            assert target["metadata"]["name"] == change["metadata"]["name"]
            _merge(target, change)
    return objects


def _merge(into: dict[str, Any], change: dict[str, Any]) -> None:
    for key, value in change.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = value


def test_the_kustomization_lists_every_file_and_only_existing_ones() -> None:
    files = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert sorted(kustomization()["resources"]) == sorted(files)


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
def test_core_objects_match_the_kubernetes_api_schemas(version: str) -> None:
    for kind, document in rendered().items():
        if kind not in CUSTOM:
            kubernetes_validate.validate(document, version, strict=True)


@pytest.mark.parametrize("kind", sorted(CUSTOM))
def test_keda_and_prometheus_operator_objects_match_their_crds(kind: str) -> None:
    document = rendered()[kind]
    model = CUSTOM[kind].model_validate(document)
    assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == document


def test_the_objects_select_the_workers_pods() -> None:
    objects = rendered()
    statefulset = objects["StatefulSet"]
    pod_labels = statefulset["spec"]["template"]["metadata"]["labels"]
    assert statefulset["spec"]["selector"]["matchLabels"].items() <= pod_labels.items()
    assert objects["Service"]["spec"]["selector"].items() <= pod_labels.items()
    assert objects["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() <= (
        pod_labels.items()
    )
    service_labels = objects["Service"]["metadata"]["labels"]
    assert objects["ServiceMonitor"]["spec"]["selector"]["matchLabels"].items() <= (
        service_labels.items()
    )
    assert statefulset["spec"]["serviceName"] == objects["Service"]["metadata"]["name"]
    target = objects["ScaledObject"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("StatefulSet", statefulset["metadata"]["name"])


def worker_container() -> dict[str, Any]:
    return dict(rendered()["StatefulSet"]["spec"]["template"]["spec"]["containers"][0])


@pytest.mark.parametrize("overlay", [None, *OVERLAYS], ids=lambda o: o.name if o else "base")
def test_overlays_patch_only_what_exists_and_stay_valid(overlay: Path | None) -> None:
    for kind, document in rendered(overlay).items():
        if kind in CUSTOM:
            model = CUSTOM[kind].model_validate(document)
            assert model.model_dump(by_alias=True, exclude_unset=True, mode="json") == document
        else:
            kubernetes_validate.validate(document, KUBERNETES_VERSIONS[-1], strict=True)


@pytest.mark.parametrize("overlay", [None, *OVERLAYS], ids=lambda o: o.name if o else "base")
def test_the_worker_settings_are_valid_and_the_pod_name_is_the_worker_id(
    monkeypatch: pytest.MonkeyPatch, overlay: Path | None
) -> None:
    config = rendered(overlay)["ConfigMap"]["data"]
    for var, value in config.items():
        monkeypatch.setenv(var, value)
    settings = load_settings()  # an unknown or invalid variable raises, naming it
    env = {e["name"]: e for e in worker_container()["env"]}
    assert env["STREAMSERVE_WORKER_ID"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"
    volumes = {m["name"]: m["mountPath"] for m in worker_container()["volumeMounts"]}
    assert settings.model_dir is not None and settings.model_dir.is_relative_to(volumes["models"])
    trigger = rendered()["ScaledObject"]["spec"]["triggers"][0]["metadata"]
    assert (trigger["topic"], trigger["consumerGroup"], trigger["bootstrapServers"]) == (
        settings.input_topic,
        settings.group_id,
        settings.kafka_bootstrap,
    )
    assert rendered()["ScaledObject"]["spec"]["maxReplicaCount"] == settings.topic_partitions


def test_probes_ask_the_workers_endpoint_and_the_grace_period_covers_the_drain() -> None:
    container = worker_container()
    port = load_settings().http_port
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": port}
    paths = {
        probe: container[probe]["httpGet"]["path"]
        for probe in ("livenessProbe", "readinessProbe", "startupProbe")
    }
    assert paths == {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    liveness = container["livenessProbe"]
    assert liveness["periodSeconds"] * liveness["failureThreshold"] >= (
        load_settings().liveness_timeout_s
    )
    pod = rendered()["StatefulSet"]["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > 2 * SHUTDOWN_FLUSH_S  # two producers flush


def test_the_pod_runs_as_the_images_numeric_user_on_a_read_only_root() -> None:
    stages = re.split(r"^FROM ", (ROOT / "Dockerfile").read_text(), flags=re.M)[1:]
    runs_as = [re.findall(r"^USER (\S+)", stage, re.M)[-1].split(":")[0] for stage in stages]
    assert all(user.isdigit() for user in runs_as), runs_as  # each image's final user
    pod = rendered()["StatefulSet"]["spec"]["template"]["spec"]
    assert str(pod["securityContext"]["runAsUser"]) == runs_as[0]
    assert worker_container()["securityContext"]["readOnlyRootFilesystem"] is True
    mounts = {m["mountPath"] for m in worker_container()["volumeMounts"]}
    assert "/tmp" in mounts  # worker slots and the Faust runtime's data directory


def test_every_alert_reads_metrics_the_worker_exports() -> None:
    exported = set()
    for metric in METRICS:
        suffixes = ("_bucket", "_sum", "_count") if metric.kind == "histogram" else ("",)
        exported |= {metric.exported_name + suffix for suffix in suffixes}
    rules = rendered()["PrometheusRule"]["spec"]["groups"][0]["rules"]
    assert {r["alert"] for r in rules} >= {
        "StreamserveLagGrowing",
        "StreamserveDeadLetterRate",
        "StreamserveFeatureStoreDown",
        "StreamserveWithoutPartitions",
        "StreamserveModelReloadRejected",
    }
    for rule in rules:
        used = set(re.findall(r"streamserve_[a-z_]+", rule["expr"]))
        assert used and used <= exported, f"{rule['alert']}: {used - exported}"
        assert rule["expr"].count("(") == rule["expr"].count(")")
