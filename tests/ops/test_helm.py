"""The Helm chart (helm/entente): `helm lint` passes and `helm template` renders what operations rely on (issue 6).

helm is installed by .ci/run into .peers/helm/helm (from the npm package that ships it); a missing
binary fails here rather than skipping silently.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "entente"
HELM = ROOT / ".peers" / "helm" / "helm"


def helm(*args: str) -> str:
    if not HELM.exists():
        pytest.fail(f"{HELM} is missing: run .ci/run (it installs helm there)")
    done = subprocess.run([str(HELM), *args], capture_output=True, text=True, timeout=60, check=False)  # noqa: S603
    assert done.returncode == 0, f"helm {' '.join(args)}\n{done.stdout}\n{done.stderr}"
    return done.stdout


def render(values: str, *sets: str) -> dict[tuple[str, str], dict[str, Any]]:
    """(kind, name) -> object of `helm template rel CHART -f ci/<values>`."""
    flags = [flag for s in sets for flag in ("--set", s)]
    out = helm("template", "rel", str(CHART), "-f", str(CHART / "ci" / values), *flags)
    return {(doc["kind"], doc["metadata"]["name"]): doc for doc in yaml.safe_load_all(out) if doc}


@pytest.mark.parametrize("values", ["default-values.yaml", "full-values.yaml"])
def test_chart_lints(values: str) -> None:
    assert "0 chart(s) failed" in helm("lint", "--strict", str(CHART), "-f", str(CHART / "ci" / values))


def _env(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("valueFrom", e.get("value")) for e in container["env"]}


def test_deployment_probes_secrets_and_security_context() -> None:
    objects = render("default-values.yaml")
    deployment = objects[("Deployment", "rel-entente")]
    pod = deployment["spec"]["template"]["spec"]
    [container] = pod["containers"]

    assert container["command"] == ["entente", "serve"]
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    assert container["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]
    assert container["resources"]["requests"] and container["resources"]["limits"]["memory"]

    secret_refs = {name: ref["secretKeyRef"] for name, ref in _env(container).items()}
    assert secret_refs == {
        "ENTENTE_DATABASE_URL": {"name": "rel-entente-secrets", "key": "database-url"},
        "ENTENTE_SECRET_KEY": {"name": "rel-entente-secrets", "key": "secret-key"},
        "ENTENTE_AUDIT_SIGNING_KEY": {"name": "rel-entente-secrets", "key": "audit-signing-key"},
    }
    assert container["envFrom"] == [{"configMapRef": {"name": "rel-entente-config"}}]
    config = objects[("ConfigMap", "rel-entente-config")]["data"]
    assert config["ENTENTE_HOST"] == "0.0.0.0" and config["ENTENTE_LOG_FORMAT"] == "json"
    assert not any("KEY" in key or "DATABASE_URL" in key for key in config)  # secrets never in the ConfigMap

    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] != 0
    assert container["securityContext"] == {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "capabilities": {"drop": ["ALL"]},
    }
    assert container["volumeMounts"] == [{"name": "tmp", "mountPath": "/tmp"}]
    assert ("Ingress", "rel-entente") not in objects and ("ServiceMonitor", "rel-entente") not in objects


def test_migrations_run_as_a_hook_job_before_the_pods() -> None:
    objects = render("default-values.yaml")
    job = objects[("Job", "rel-entente-migrate")]
    hooks = job["metadata"]["annotations"]
    assert hooks["helm.sh/hook"] == "pre-install,pre-upgrade"
    [container] = job["spec"]["template"]["spec"]["containers"]
    assert container["command"] == ["entente", "migrate"]
    assert _env(container)["ENTENTE_DATABASE_URL"]["secretKeyRef"]["key"] == "database-url"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    # What the Job reads must exist before it: the chart's Secret and ConfigMap are earlier hooks.
    for kind, name in [("Secret", "rel-entente-secrets"), ("ConfigMap", "rel-entente-config")]:
        annotations = objects[(kind, name)]["metadata"]["annotations"]
        assert annotations["helm.sh/hook"] == hooks["helm.sh/hook"]
        assert int(annotations["helm.sh/hook-weight"]) < int(hooks["helm.sh/hook-weight"])
    assert ("Job", "rel-entente-migrate") not in render("default-values.yaml", "migrations.enabled=false")


def test_existing_secret_ingress_service_monitor_and_workers() -> None:
    objects = render("full-values.yaml")
    assert not any(kind == "Secret" for kind, _ in objects)
    [container] = objects[("Deployment", "rel-entente")]["spec"]["template"]["spec"]["containers"]
    assert {ref["secretKeyRef"]["name"] for ref in _env(container).values()} == {"entente-prod"}
    config = objects[("ConfigMap", "rel-entente-config")]["data"]
    assert config["ENTENTE_WORKERS"] == "2" and config["PROMETHEUS_MULTIPROC_DIR"] == "/tmp/metrics"
    ingress = objects[("Ingress", "rel-entente")]["spec"]
    assert ingress["ingressClassName"] == "nginx" and ingress["tls"][0]["secretName"] == "entente-tls"
    backend = ingress["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "rel-entente", "port": {"name": "http"}}
    monitor = objects[("ServiceMonitor", "rel-entente")]
    assert monitor["metadata"]["labels"]["release"] == "prometheus"
    assert monitor["spec"]["endpoints"][0]["path"] == "/metrics" and monitor["spec"]["endpoints"][0]["port"] == "http"


def test_missing_secrets_are_refused_at_render_time() -> None:
    done = subprocess.run(  # noqa: S603
        [str(HELM), "template", "rel", str(CHART)], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode != 0 and "secrets.databaseUrl (or secrets.existingSecret) is required" in done.stderr
