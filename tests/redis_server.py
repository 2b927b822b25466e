"""A real ``redis-server`` on a free loopback port, and ``python -m quoteflow ...``
processes, for the scale-out tests."""

from __future__ import annotations

import contextlib
import os
import re
import selectors
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

from tests.conftest import ROOT, free_port, require_executable


class RedisServer:
    """Start/stop/restart one redis-server (no persistence unless asked).

    ``persist=True`` turns the append-only file on (``appendfsync always``), so that a
    stop and start keeps the stream, as a production Redis would.
    """

    def __init__(self, workdir: Path, port: int | None = None, *, persist: bool = False) -> None:
        self.binary = require_executable("redis-server")
        self.port = port or free_port()
        self.workdir = workdir
        self.persist = persist
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        # Same port on a restart: clients and brokers reconnect to the address they know.
        self.proc = subprocess.Popen(
            [
                self.binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "yes" if self.persist else "no",
                "--appendfsync",
                "always",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            with (
                contextlib.suppress(OSError),
                socket.create_connection(("127.0.0.1", self.port), 0.2) as s,
            ):
                s.sendall(b"PING\r\n")
                if s.recv(16).startswith(b"+PONG"):
                    return
            time.sleep(0.02)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(10)
            self.proc = None

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(10)
            self.proc = None


@contextlib.contextmanager
def running_redis(workdir: Path) -> Iterator[RedisServer]:
    server = RedisServer(workdir)
    server.start()
    try:
        yield server
    finally:
        server.stop()


class QuoteflowProcess:
    """``python -m quoteflow ARGS`` as a real process, ready once it printed its line.

    stdout carries only the ready line (read here); stderr goes to a file (a pipe that
    nobody reads would block a chatty process) and is shown by :meth:`log`.
    """

    READY = re.compile(r"^quoteflow (serving|generating) .*?(?:http://[^:/]+:(\d+)/|$)")

    def __init__(self, workdir: Path, name: str, *args: str) -> None:
        self.name = name
        self.args = args
        self.stderr_path = workdir / f"{name}.stderr"
        env = dict(os.environ)
        env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
        env.pop("QUOTEFLOW_AUTH_SECRET", None)
        self._stderr = self.stderr_path.open("wb")
        self.proc: subprocess.Popen[str] = subprocess.Popen(
            [sys.executable, "-m", "quoteflow", *args],
            stdout=subprocess.PIPE,
            stderr=self._stderr,
            text=True,
            env=env,
            cwd=ROOT,
        )
        self.line = ""
        self.port: int | None = None

    def wait_ready(self, timeout: float = 60.0) -> QuoteflowProcess:
        """Block until the ready line; parse the HTTP port from it when there is one."""
        assert self.proc.stdout is not None
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            if not sel.select(timeout):
                raise AssertionError(f"{self.name}: no ready line in {timeout} s\n{self.log()}")
            self.line = self.proc.stdout.readline()
        finally:
            sel.close()
        match = self.READY.match(self.line)
        if match is None:
            raise AssertionError(f"{self.name}: unexpected output {self.line!r}\n{self.log()}")
        if match.group(2):
            self.port = int(match.group(2))
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        self._stderr.flush()
        return self.stderr_path.read_text(errors="replace")

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> None:
        """Kill if still running; close pipes (used in finally blocks)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._stderr.close()


@contextlib.contextmanager
def quoteflow_processes(workdir: Path) -> Iterator[list[QuoteflowProcess]]:
    """A list to register started processes in; every one is stopped at exit."""
    procs: list[QuoteflowProcess] = []
    try:
        yield procs
    finally:
        for p in procs:
            p.stop()
