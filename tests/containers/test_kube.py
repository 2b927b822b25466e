"""``podman kube play`` of deploy/k8s/ through a test overlay: Redis, the generator and a
serving instance come up from the shipped Deployments, and /healthz reports Redis ok.

The overlay changes only what podman cannot play as shipped (measured with podman 4.3):

- ``replicas: 1``: podman starts every replica's pod with the same published port, so
  ``replicas: 3`` fails (``address already in use``);
- every ``containerPort`` gets ``hostIP: 127.0.0.1`` and a free ``hostPort``: podman
  publishes each containerPort on the host (0.0.0.0, the same number) otherwise;
- ``httpGet`` probes become ``exec`` probes running the same request with the image's
  python: podman turns ``httpGet`` into a ``curl`` healthcheck (no curl in a slim image)
  and a named port (``port: http``) into port 0;
- Service and HorizontalPodAutoscaler are left out (podman ignores them); Redis is
  played on its own onto the network with the alias ``quoteflow-redis``, the name the
  Service gives it in a cluster.

What only a real cluster checks (docs/containers.md): Service DNS and load balancing,
the HPA, readiness gating traffic (podman has no Service to take a pod out of), preStop
and terminationGracePeriodSeconds, resources.
"""

from __future__ import annotations

import copy
import http.client
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from quoteflow.client import SSEParser
from tests.conftest import ROOT, free_port
from tests.containers.conftest import REDIS_IMAGE, Pod, podman, wait_http
from tests.containers.test_image import read_events

pytestmark = [pytest.mark.container, pytest.mark.redis, pytest.mark.timeout(300)]

Doc = dict[str, Any]


def probe_command(path: str, port: int) -> list[str]:
    """An exec probe doing what ``httpGet`` does, with the image's python, in the form
    podman 4.3 runs: it joins an exec probe's words with blanks into one ``sh -c`` line
    (so the words are given as that one line, quoted for the shell)."""
    code = (
        "import sys, urllib.request; sys.exit(urllib.request.urlopen("
        f"'http://127.0.0.1:{port}{path}', timeout=2).status != 200)"
    )
    return [shlex.join(["python", "-c", code])]


def overlay(docs: list[Doc], prefix: str, images: dict[str, str]) -> list[Doc]:
    """The Deployments of ``docs`` as podman plays them (see the module docstring)."""
    out = []
    for doc in docs:
        if doc["kind"] != "Deployment":
            continue
        d = copy.deepcopy(doc)
        d["metadata"]["name"] = f"{prefix}-{d['metadata']['name']}"
        d["spec"]["replicas"] = 1
        for c in d["spec"]["template"]["spec"]["containers"]:
            c["image"] = images[c["image"]]
            named = {p.get("name"): p["containerPort"] for p in c.get("ports", [])}
            for p in c.get("ports", []):
                p.update(hostIP="127.0.0.1", hostPort=free_port())
            for kind in ("readinessProbe", "livenessProbe"):
                get = c.get(kind, {}).pop("httpGet", None)
                if get is not None:
                    port = named.get(get["port"], get["port"])
                    c[kind]["exec"] = {"command": probe_command(get["path"], int(port))}
        out.append(d)
    return out


def manifests() -> list[Doc]:
    docs: list[Doc] = []
    for f in sorted((ROOT / "deploy" / "k8s").glob("*.yaml")):
        docs.extend(d for d in yaml.safe_load_all(f.read_text()) if d)
    return docs


def host_port(doc: Doc) -> int:
    return int(doc["spec"]["template"]["spec"]["containers"][0]["ports"][0]["hostPort"])


def test_kube_play_of_the_manifests_brings_up_redis_generator_and_serve(
    pod: Pod, images: str, tmp_path: Path
) -> None:
    net = pod.network()
    played = overlay(
        manifests(),
        pod.prefix,
        {"quoteflow:latest": images, "redis:7-alpine": REDIS_IMAGE},
    )
    by_name = {d["metadata"]["name"].removeprefix(pod.prefix + "-"): d for d in played}
    assert set(by_name) == {"quoteflow", "quoteflow-generator", "quoteflow-redis"}
    files = {}
    for name, doc in by_name.items():
        files[name] = tmp_path / f"{name}.yaml"
        files[name].write_text(yaml.safe_dump(doc))
    try:
        podman(
            "kube",
            "play",
            "--network",
            f"{net}:alias=quoteflow-redis",
            str(files["quoteflow-redis"]),
        )
        for name in ("quoteflow-generator", "quoteflow"):
            podman("kube", "play", "--network", net, str(files[name]))

        serve = f"http://127.0.0.1:{host_port(by_name['quoteflow'])}"
        gen = f"http://127.0.0.1:{host_port(by_name['quoteflow-generator'])}"
        for url, what in ((gen, "generator"), (serve, "serve")):
            health = json.loads(wait_http(url + "/healthz", what))
            assert health["status"] == "ok", health
            assert health["broker"]["redis"] == "ok", health

        # the generator's events reach the serving pod through Redis
        conn = http.client.HTTPConnection("127.0.0.1", host_port(by_name["quoteflow"]), timeout=30)
        conn.request("GET", "/stream")
        resp = conn.getresponse()
        assert resp.status == 200
        events = read_events(resp, SSEParser(), 5)
        conn.close()
        assert "tick" in {ev.event for ev in events}

        # the pods run as the manifests' securityContext says; the liveness probes became
        # podman healthchecks that pass
        for name, ctr in (("quoteflow", "quoteflow"), ("quoteflow-generator", "generator")):
            container = f"{pod.prefix}-{name}-pod-0-{ctr}"
            assert podman("exec", container, "id", "-u") == "10001"
            check = podman("inspect", "--format", "{{json .Config.Healthcheck}}", container)
            assert "/livez" in check, check
            podman("healthcheck", "run", container)
    finally:
        for f in files.values():
            podman("kube", "down", str(f), check=False)
