"""The image of deploy/Dockerfile, run for real: health, a stream, its user, its
HEALTHCHECK, and a clean end of the stream on ``podman stop``."""

from __future__ import annotations

import http.client
import json

import pytest

from quoteflow.client import Event, SSEParser
from tests.containers.conftest import Pod, podman, wait_http

pytestmark = [pytest.mark.container, pytest.mark.timeout(300)]

PUBLISH = ("-p", "127.0.0.1::8080")


def read_events(resp: http.client.HTTPResponse, parser: SSEParser, n: int) -> list[Event]:
    """At least ``n`` events from an open SSE response."""
    out: list[Event] = []
    while len(out) < n:
        chunk = resp.read1(65536)
        assert chunk, "stream ended early"
        out += parser.feed(chunk)
    return out


def test_image_serves_streams_as_non_root_and_stops_cleanly(pod: Pod, images: str) -> None:
    c = pod.run("serve", images, "--tick-interval", "0.05", opts=PUBLISH)
    port = pod.host_port(c)
    health = json.loads(wait_http(f"http://127.0.0.1:{port}/healthz", "the container"))
    assert health["status"] == "ok", health

    # the process runs as the image's non-root user
    assert podman("exec", c, "id", "-u") == "10001"
    assert podman("inspect", "--format", "{{.Config.User}}", c) == "10001"

    # HEALTHCHECK survived the build (--format docker) and passes
    check = podman("inspect", "--format", "{{json .Config.Healthcheck}}", c)
    assert "/livez" in check, check
    podman("healthcheck", "run", c)  # exit 0: healthy

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.request("GET", "/stream")
    resp = conn.getresponse()
    assert resp.status == 200
    assert resp.getheader("Content-Type", "").startswith("text/event-stream")
    parser = SSEParser()
    events = read_events(resp, parser, 5)
    assert "tick" in {ev.event for ev in events}, [ev.event for ev in events]

    # podman stop sends the image's STOPSIGNAL (SIGTERM): the server ends every stream
    # with the chunked body's final chunk (http.client raises IncompleteRead otherwise)
    # and exits 0 long before podman's 10 s kill.
    podman("stop", c)
    resp.read()
    conn.close()
    assert podman("inspect", "--format", "{{.State.ExitCode}}", c) == "0"
    log = pod.logs(c)
    assert "Traceback" not in log, log
    # the log names the wildcard it bound, not a loopback it did not
    assert "listening on 0.0.0.0:8080 (all interfaces" in log, log


def test_image_carries_only_what_serving_needs(images: str) -> None:
    """Trimmed image: no test or dev dependencies, no pip cache, no packages' test suites."""
    script = (
        "import importlib.util, pathlib, site;"
        "sp = pathlib.Path(site.getsitepackages()[0]);"
        "print(sorted(m for m in ('pytest', 'hypothesis', 'jupyterlab', 'playwright', 'arch',"
        " 'statsmodels', 'mypy', 'ruff') if importlib.util.find_spec(m)));"
        "print(sorted(str(p) for p in sp.glob('*/tests')));"
        "print(sorted(str(p) for p in pathlib.Path('/').glob('*/*/.cache/pip')));"
        "import quoteflow.server, redis, jwt; print('ok')"
    )
    out = podman("run", "--rm", "--entrypoint", "python", images, "-c", script).splitlines()
    assert out == ["[]", "[]", "[]", "ok"], out
    size = int(podman("image", "inspect", "--format", "{{.Size}}", images))
    print(f"image size: {size / 1e6:.0f} MB")
