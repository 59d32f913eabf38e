"""The Kubernetes manifests, checked without a cluster: every object against the Kubernetes
OpenAPI schemas (kubernetes-validate), the kustomizations resolve, and what the manifests
say about BEM (probe paths, ports, variable names, shutdown timing, the image's user, the
body limit) matches what BEM serves and reads."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import orjson
import pytest
import yaml

from bem.config import Settings

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
KUBERNETES = "1.30.0"
CUSTOM = {("monitoring.coreos.com/v1", "ServiceMonitor")}  # CRDs: not in Kubernetes' schemas


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]


def kustomization(directory: Path) -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((directory / "kustomization.yaml").read_text())
    return data


def base_objects() -> list[dict[str, Any]]:
    resources = kustomization(BASE)["resources"]
    return [doc for name in resources for doc in documents(BASE / name)]


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in base_objects() if o["kind"] == kind}


def containers() -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(pod spec, container) of every Deployment and Job."""
    workloads = [*by_kind("Deployment").values(), *by_kind("Job").values()]
    return [
        (w["spec"]["template"]["spec"], c)
        for w in workloads
        for c in w["spec"]["template"]["spec"]["containers"]
    ]


@pytest.mark.parametrize(
    "path",
    [*BASE.glob("*.yaml"), K8S / "overlays" / "production" / "namespace.yaml"],
    ids=lambda p: p.name,
)
def test_every_object_is_valid_kubernetes(path: Path) -> None:
    if path.name == "kustomization.yaml":
        return
    for doc in documents(path):
        if (doc["apiVersion"], doc["kind"]) in CUSTOM:
            continue
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_kustomizations_resolve() -> None:
    for name in kustomization(BASE)["resources"]:
        assert (BASE / name).is_file(), name
    images = {i["name"] for i in kustomization(BASE)["images"]}
    assert {c["image"] for _, c in containers()} == images
    production = K8S / "overlays" / "production"
    overlay = kustomization(production)
    assert {(production / r).resolve() for r in overlay["resources"]} >= {BASE.resolve()}
    targets = {(o["kind"], o["metadata"]["name"]): o for o in base_objects()}
    for patch in overlay["patches"]:
        for doc in documents(production / patch["path"]):
            key = (doc["kind"], doc["metadata"]["name"])
            assert key in targets, f"{patch['path']} patches {key}, which the base lacks"
            patched = doc.get("spec", {}).get("template", {}).get("spec", {}).get("containers", [])
            if patched:
                pod = targets[key]["spec"]["template"]["spec"]
                assert {c["name"] for c in patched} <= {c["name"] for c in pod["containers"]}
    assert overlay["images"][0]["name"] in images


def test_probes_ports_and_settings_are_what_bem_serves_and_reads() -> None:
    served = set(orjson.loads((ROOT / "openapi.json").read_bytes())["paths"])
    config = by_kind("ConfigMap")["bem"]["data"]
    fields = {f"BEM_{name.upper()}" for name in Settings.model_fields}
    secret_keys = set(documents(K8S / "secret.example.yaml")[0]["stringData"])
    for key in [*config, *secret_keys]:
        assert not key.startswith("BEM_") or key in fields, f"BEM reads no {key}"
    for _, container in containers():
        env = {e["name"]: e.get("value") for e in container.get("env", [])}
        assert all(not k.startswith("BEM_") or k in fields for k in env)
        ports = {p["name"]: p["containerPort"] for p in container.get("ports", [])}
        if "BEM_PORT" in env:
            assert ports["http"] == int(env["BEM_PORT"])
        if container["name"] == "worker":
            assert ports["metrics"] == int(config["BEM_WORKER_METRICS_PORT"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                get = container[probe]["httpGet"]
                assert get["port"] in ports
                assert get["path"] in served if get["port"] == "http" else get["path"] == "/metrics"
        for entry in container.get("env", []):
            key = entry.get("valueFrom", {}).get("secretKeyRef", {}).get("key")
            assert key is None or key in secret_keys


def test_pods_stop_in_time_and_run_unprivileged() -> None:
    config = by_kind("ConfigMap")["bem"]["data"]
    shutdown = float(config["BEM_SHUTDOWN_TIMEOUT"])
    user = re.search(r"^USER (\d+)", (ROOT / "deploy" / "Dockerfile").read_text(), re.M)
    assert user is not None
    for pod, container in containers():
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] == int(user.group(1))
        assert pod["automountServiceAccountToken"] is False
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert "memory" in container["resources"]["limits"]
        assert any(m["mountPath"] == "/tmp" for m in container["volumeMounts"])
        if pod.get("restartPolicy") == "Never":
            continue  # the migration Job
        pre_stop = container.get("lifecycle", {}).get("preStop", {}).get("exec", {})
        delay = float(pre_stop["command"][1]) if pre_stop else 0.0
        assert pod["terminationGracePeriodSeconds"] > shutdown + delay


def test_every_deployment_has_a_matching_autoscaler_budget_and_service() -> None:
    deployments = by_kind("Deployment")
    hpas, pdbs = by_kind("HorizontalPodAutoscaler"), by_kind("PodDisruptionBudget")
    services = by_kind("Service")
    for name, deployment in deployments.items():
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert deployment["spec"]["selector"]["matchLabels"] == labels
        assert hpas[name]["spec"]["scaleTargetRef"]["name"] == name
        assert hpas[name]["spec"]["minReplicas"] >= 2
        assert pdbs[name]["spec"]["selector"]["matchLabels"] == labels
        assert any(s["spec"]["selector"] == labels for s in services.values()), name
    port_names = {p["name"] for s in services.values() for p in s["spec"]["ports"]}
    (monitor,) = by_kind("ServiceMonitor").values()
    assert {e["port"] for e in monitor["spec"]["endpoints"]} <= port_names
    for ingress in by_kind("Ingress").values():
        for rule in ingress["spec"]["rules"]:
            for path in rule["http"]["paths"]:
                assert path["backend"]["service"]["name"] in services


def test_the_ingress_keeps_the_edge_limits_of_deploy_nginx() -> None:
    template = (ROOT / "deploy" / "nginx" / "templates" / "bem.conf.template").read_text()
    body = re.search(r"client_max_body_size (\S+);", template)
    assert body is not None
    api = by_kind("Ingress")["bem-api"]["metadata"]["annotations"]
    assert api["nginx.ingress.kubernetes.io/proxy-body-size"] == body.group(1)
    assert api["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    feed = by_kind("Ingress")["bem-feed"]
    assert feed["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-buffering"] == "off"
    (path,) = feed["spec"]["rules"][0]["http"]["paths"]
    assert re.fullmatch(path["path"], "/v1/projects/p/events/ws")
    assert not re.fullmatch(path["path"], "/v1/projects/p/events")
