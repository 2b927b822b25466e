"""Real containers with rootful podman (issue 17): the image of deploy/Dockerfile, built on a
local Debian base (scripts/container-test.sh), run, scaled and played from deploy/k8s.

The session fixture ``images`` runs ``scripts/container-test.sh build`` once: it installs
podman & co as root if they are missing and builds only what is not cached. Without podman
and without root the tests skip locally and fail in CI.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest

from tests.conftest import IN_CI, ROOT

SCRIPT = ROOT / "scripts" / "container-test.sh"
CONTAINERS_CONF = os.environ.get(
    "CONTAINERS_CONF", str(ROOT / "deploy" / "podman" / "containers.conf")
)
IMAGE = os.environ.get("QUOTEFLOW_IMAGE", "localhost/quoteflow:latest")
REDIS_IMAGE = os.environ.get("QUOTEFLOW_REDIS_IMAGE", "localhost/quoteflow-redis:7")
NGINX_IMAGE = os.environ.get("QUOTEFLOW_NGINX_IMAGE", "localhost/quoteflow-nginx:1")
# hang guard for one podman command (a build runs in the session fixture, not here)
PODMAN_TIMEOUT = 120.0


def podman(*args: str, check: bool = True, timeout: float = PODMAN_TIMEOUT) -> str:
    """Run ``podman args`` with the project's containers.conf; its stdout, stripped."""
    proc = subprocess.run(
        ["podman", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF},
        check=False,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {' '.join(args)}: exit {proc.returncode}\n{proc.stderr}")
    return proc.stdout.strip()


@pytest.fixture(scope="session")
def images() -> str:
    """Build (or find cached) the base images and the quoteflow image; the image's name."""
    if shutil.which("podman") is None and os.geteuid() != 0 and not IN_CI:
        pytest.skip(
            "podman not installed (and not root to install it): see scripts/container-test.sh"
        )
    proc = subprocess.run(
        ["bash", str(SCRIPT), "build"],
        capture_output=True,
        text=True,
        timeout=900,  # hang guard: a cold build is about 2 minutes
        env={
            **os.environ,
            "CONTAINERS_CONF": CONTAINERS_CONF,
            "QUOTEFLOW_IMAGE": IMAGE,
            "PYTHON": sys.executable,  # its pip's configuration goes into the build
        },
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(f"scripts/container-test.sh build failed:\n{proc.stderr[-4000:]}")
    return IMAGE


@dataclass
class Pod:
    """Containers and networks one test created (names unique per test); removed at the end."""

    prefix: str = field(default_factory=lambda: f"qft-{uuid.uuid4().hex[:8]}")
    containers: list[str] = field(default_factory=list)
    networks: list[str] = field(default_factory=list)

    def name(self, what: str) -> str:
        return f"{self.prefix}-{what}"

    def network(self) -> str:
        net = self.name("net")
        podman("network", "create", net)
        self.networks.append(net)
        return net

    def run(self, what: str, image: str, *args: str, opts: tuple[str, ...] = ()) -> str:
        """``podman run -d`` a container named after ``what``; its name."""
        name = self.name(what)
        self.containers.append(name)
        podman("run", "-d", "--name", name, *opts, image, *args)
        return name

    def host_port(self, container: str, port: int = 8080) -> int:
        """The host port published for ``port`` of ``container``."""
        out = podman("port", container, f"{port}/tcp")  # e.g. 127.0.0.1:41234
        return int(out.splitlines()[0].rsplit(":", 1)[1])

    def logs(self, container: str) -> str:
        proc = subprocess.run(
            ["podman", "logs", container],
            capture_output=True,
            text=True,
            timeout=PODMAN_TIMEOUT,
            env={**os.environ, "CONTAINERS_CONF": CONTAINERS_CONF},
            check=False,
        )
        return proc.stdout + proc.stderr

    def cleanup(self) -> None:
        for c in reversed(self.containers):
            podman("rm", "-f", "-t", "2", c, check=False)
        for n in self.networks:
            podman("network", "rm", "-f", n, check=False)


@pytest.fixture
def pod(images: str) -> Iterator[Pod]:
    p = Pod()
    try:
        yield p
    finally:
        p.cleanup()


def wait_http(url: str, what: str, timeout: float = 60.0, status: int = 200) -> bytes:
    """Poll ``url`` until it answers ``status`` (a condition with a deadline); the body."""
    deadline = time.monotonic() + timeout
    last: object = None
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == status:
                    return bytes(resp.read())
                last = resp.status
        except urllib.error.HTTPError as exc:
            last = exc.code
            if exc.code == status:
                return bytes(exc.read())
        except OSError as exc:
            last = exc
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not answering {status} at {url} (last: {last!r})")
        time.sleep(0.1)
