"""The scaled set-up in containers: Redis, one generator, two serving instances and nginx
(deploy/nginx.conf) on one podman network. A real client streaming through nginx resumes
on the other instance when its instance is killed, with no gap and no duplicate: the
guarantee tests/integration/test_scaleout_nginx.py gives for processes, now for the
images users deploy. Ground truth is the Redis stream (``XRANGE``)."""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest
import redis

from quoteflow.client import Event, stream
from tests.containers.conftest import NGINX_IMAGE, REDIS_IMAGE, Pod, podman, wait_http
from tests.integration.test_scaleout_nginx import STREAM_KEY, SYMBOL, connections, until

pytestmark = [pytest.mark.container, pytest.mark.redis, pytest.mark.timeout(300)]

PUBLISH = ("-p", "127.0.0.1::8080")


def nginx_conf_for(workdir: Path, upstreams: list[str]) -> Path:
    """deploy/nginx.conf listening on the container's 8080, upstreams by container name."""
    text = (Path(__file__).resolve().parents[2] / "deploy" / "nginx.conf").read_text()
    text = text.replace("worker_processes auto;", "worker_processes 1;")
    text = text.replace("listen 127.0.0.1:8080;", "listen 8080;")
    names = iter(upstreams)
    text, n = re.subn(r"server 127\.0\.0\.1:\d+", lambda _m: f"server {next(names)}:8080", text)
    assert n == len(upstreams), "deploy/nginx.conf must list one upstream per instance"
    path = workdir / "nginx.conf"
    path.write_text(text)
    path.chmod(0o644)
    return path


def feed(redis_port: int, first: str, last: str) -> list[tuple[str, str]]:
    """``(id, event)`` of every SYMBOL event in the Redis stream from first to last."""
    client = redis.Redis(host="127.0.0.1", port=redis_port)
    try:
        rows = client.xrange(STREAM_KEY, min=first, max=last)
    finally:
        client.close()
    return [(i.decode(), f[b"e"].decode()) for i, f in rows if f[b"s"].decode() == SYMBOL]


def test_client_resumes_across_container_instances_without_gap(
    pod: Pod, images: str, tmp_path: Path
) -> None:
    net = pod.network()
    on_net = ("--network", net)
    red = pod.run(
        "redis", REDIS_IMAGE, "--save", "", "--appendonly", "no",
        opts=(*on_net, "-p", "127.0.0.1::6379"),
    )  # fmt: skip
    broker = f"redis://{red}:6379/0"
    gen = pod.run(
        "generator", images, "generate", "--broker", broker,
        "--host", "0.0.0.0", "--port", "8080", "--universe", "3", "--seed", "1",
        "--tick-interval", "0.05", "--bar-interval", "1",
        opts=(*on_net, "--entrypoint", "quoteflow"),
    )  # fmt: skip
    instances: dict[str, str] = {}
    for name in ("A", "B"):
        instances[name] = pod.run(
            f"serve-{name}", images, "--broker", broker, "--instance-id", name,
            "--retry-ms", "200", "--heartbeat", "1", "--trust-proxy",
            opts=(*on_net, *PUBLISH),
        )  # fmt: skip
    conf = nginx_conf_for(tmp_path, list(instances.values()))
    # the upstream names must resolve when nginx starts: the instances first
    urls = {name: f"http://127.0.0.1:{pod.host_port(c)}" for name, c in instances.items()}
    for name, url in urls.items():
        wait_http(url + "/healthz", f"instance {name}")
    lb = pod.run(
        "nginx", NGINX_IMAGE, "-c", "/etc/quoteflow/nginx.conf",
        opts=(*on_net, *PUBLISH, "-v", f"{conf}:/etc/quoteflow/nginx.conf:ro,Z"),
    )  # fmt: skip
    lb_url = f"http://127.0.0.1:{pod.host_port(lb)}"
    wait_http(lb_url + "/livez", "nginx")
    redis_port = pod.host_port(red, 6379)

    async def main() -> list[Event]:
        got: list[Event] = []

        async def collect() -> None:
            async with stream(
                lb_url + "/stream",
                symbols=[SYMBOL],
                backoff_initial=0.1,
                backoff_max=0.5,
                heartbeat_timeout=5.0,
            ) as s:
                async for ev in s:
                    got.append(ev)

        task = asyncio.create_task(collect())
        try:
            await until(lambda: len(got) >= 10, 60, "first events through nginx")
            conns = {name: connections(url) for name, url in urls.items()}
            target = next(name for name, n in conns.items() if n == 1)
            podman("kill", instances[target])  # SIGKILL: no goodbye to the client
            before = len(got)
            await until(lambda: len(got) >= before + 40, 60, "events after the kill")
            other = next(name for name in urls if name != target)
            assert connections(urls[other]) == 1
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        return got

    started = time.monotonic()
    events = asyncio.run(main())
    got = [(ev.id or "", ev.event) for ev in events]
    assert "reset" not in {e for _, e in got}
    ids = [i for i, _ in got]
    assert len(set(ids)) == len(ids), "duplicate event ids"
    assert feed(redis_port, ids[0], ids[-1]) == got, "events missing or out of order"
    for c in (gen, *instances.values()):
        assert "Traceback" not in pod.logs(c), pod.logs(c)
    print(f"scaled set-up: {len(got)} events, {time.monotonic() - started:.1f} s")
