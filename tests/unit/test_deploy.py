"""The deployment files carry the essentials (issue: production), checked statically;
tests/containers builds and runs them with podman; nginx.conf is checked by `nginx -t`."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_executable

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"


def _docs() -> list[dict]:  # type: ignore[type-arg]
    docs = []
    for f in sorted((DEPLOY / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def _kind(kind: str, name: str) -> dict:  # type: ignore[type-arg]
    for d in _docs():
        if d["kind"] == kind and d["metadata"]["name"] == name:
            return d
    raise AssertionError(f"no {kind} {name} in deploy/k8s")


def test_dockerfile_runs_as_non_root_with_healthcheck() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    users = re.findall(r"^USER\s+(\S+)", text, flags=re.M)
    assert users and users[-1] not in {"root", "0"}
    assert re.search(r"^HEALTHCHECK .*", text, flags=re.M)
    assert "/livez" in text  # liveness, not readiness: a Redis outage is no reason to restart
    assert "slim" in text.split("\n", 5)[-1] or "slim" in text


def test_k8s_deployment_probes_and_prestop() -> None:
    dep = _kind("Deployment", "quoteflow")
    spec = dep["spec"]["template"]["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    (c,) = spec["containers"]
    # readiness drops while Redis is down (route elsewhere); liveness must not (no restart)
    assert c["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert c["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert "preStop" in c["lifecycle"]
    assert any("redis://" in a for a in c["args"])
    assert spec["terminationGracePeriodSeconds"] >= 10


def test_k8s_has_service_hpa_redis_and_one_generator() -> None:
    assert _kind("Service", "quoteflow")
    hpa = _kind("HorizontalPodAutoscaler", "quoteflow")
    assert hpa["spec"]["minReplicas"] >= 2
    assert _kind("Deployment", "quoteflow-redis")
    gen = _kind("Deployment", "quoteflow-generator")
    assert gen["spec"]["replicas"] == 1
    assert gen["spec"]["strategy"]["type"] == "Recreate"


def test_nginx_conf_essentials() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    stream = text[text.index("location /stream") :]
    stream = stream[: stream.index("}")]
    for directive in (
        "proxy_buffering off",
        "proxy_http_version 1.1",
        'proxy_set_header Connection ""',
        "proxy_read_timeout 1h",
    ):
        assert directive in stream, directive
    # nginx must not strip the server's X-Accel-Buffering: no header
    assert "proxy_hide_header X-Accel-Buffering" not in text
    assert "proxy_ignore_headers" not in text
    upstream = text[text.index("upstream quoteflow") :]
    assert len(re.findall(r"^\s*server 127\.0\.0\.1:\d+", upstream, flags=re.M)) >= 2
    assert "keepalive" in upstream


def test_nginx_accepts_the_config(tmp_path: Path) -> None:
    nginx = require_executable("nginx")
    conf = (DEPLOY / "nginx.conf").read_text().replace("/tmp/quoteflow-nginx", str(tmp_path / "ng"))
    (tmp_path / "nginx.conf").write_text(conf)
    proc = subprocess.run(
        [nginx, "-t", "-p", str(tmp_path), "-c", str(tmp_path / "nginx.conf"), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 0, proc.stderr


@pytest.mark.parametrize("path", ["nginx.conf", "Dockerfile", "k8s/deployment.yaml"])
def test_deploy_files_exist(path: str) -> None:
    assert (DEPLOY / path).is_file()


def test_k8s_commands_parse_with_the_real_cli() -> None:
    """The manifests' arguments are valid ``quoteflow`` command lines (no drift)."""
    from quoteflow.cli import build_parser

    parser = build_parser()
    entry = re.search(r"^ENTRYPOINT\s+(\[.*\])", (DEPLOY / "Dockerfile").read_text(), re.M)
    assert entry
    entrypoint = json.loads(entry.group(1))
    dep = _kind("Deployment", "quoteflow")["spec"]["template"]["spec"]["containers"][0]
    args = parser.parse_args([*entrypoint[1:], *dep["args"]])
    assert args.command == "serve" and args.broker.startswith("redis://") and not args.generate
    gen = _kind("Deployment", "quoteflow-generator")["spec"]["template"]["spec"]["containers"][0]
    assert gen["command"][0] == "quoteflow"
    args = parser.parse_args(gen["command"][1:])
    assert args.command == "generate" and args.broker == dep["args"][1]
    assert gen["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert str(args.port) == str(gen["ports"][0]["containerPort"])


def test_nginx_passes_client_address_and_resume_header() -> None:
    text = (DEPLOY / "nginx.conf").read_text()
    stream = text[text.index("location /stream") :]
    assert "proxy_set_header X-Real-IP $remote_addr" in stream
    assert "proxy_set_header Last-Event-ID $http_last_event_id" in stream
    assert "http_503" in stream  # a stopping instance's 503 goes to the next upstream
