#!/usr/bin/env python3
"""Plant known bugs in a scratch copy of the tree and check that the tests catch them.

A small, explicit mutation run (docs/testing.md): each mutation is one ``(file, old text,
new text)`` replacement on a critical path (resume, slow consumer, parser at EOF, GARCH
likelihood, auth), applied to a fresh copy of the working tree in a temporary directory,
followed by the tests that are meant to catch it, run there with ``PYTHONPATH`` pointing
at the copy. A mutation is *caught* when those tests fail, *survived* when they pass.
The real tree is never modified.

Usage::

    python3 scripts/mutate.py            # all mutations, markdown table on stdout
    python3 scripts/mutate.py --list     # names only
    python3 scripts/mutate.py -k ws      # only mutations whose name contains "ws"
    python3 scripts/mutate.py --check    # each old text occurs exactly once (no tests)

Exit status: 0 when every mutation was caught, 1 when one survived or did not apply.
``make mutate`` runs the whole list. This is a tool, not a test: pytest does not collect
it (tests/unit/test_mutations.py only checks that the list still applies to the tree).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: One mutation's tests may run this long before the run is counted as a hang (which
#: is reported as such: a test that only fails by pytest's timeout is a weak catch).
RUN_HANG_GUARD_S = 900.0


@dataclass(frozen=True)
class Mutation:
    """A planted bug: replace ``old`` (which must occur exactly once) by ``new`` in ``path``.

    ``tests`` are pytest arguments (paths, ``-k`` expressions) run against the mutated copy.
    ``also`` holds further ``(path, old, new)`` edits of the same bug, when one line is
    not enough to break the behaviour (two safeguards).
    """

    name: str
    area: str
    path: str
    old: str
    new: str
    tests: tuple[str, ...]
    what: str
    also: tuple[tuple[str, str, str], ...] = ()

    @property
    def edits(self) -> tuple[tuple[str, str, str], ...]:
        """Every ``(path, old, new)`` replacement of this mutation."""
        return ((self.path, self.old, self.new), *self.also)


WS_AUTH_TESTS = ("tests/integration/test_ws_auth.py",)
AUTH_TESTS = (
    "tests/unit/test_auth.py",
    "tests/integration/test_auth_http.py",
    "tests/integration/test_ws_auth.py",
)
RESUME_TESTS = (
    "tests/unit/test_broker.py",
    "tests/integration/test_resume.py",
    "tests/integration/test_ws.py",
)
REDIS_TESTS = ("tests/integration/test_redis_broker.py",)
SLOW_TESTS = (
    "tests/unit/test_broker.py",
    "tests/integration/test_slow_consumer.py",
    "tests/integration/test_ws.py",
)
CLIENT_PAUSE_TESTS = ("tests/integration/test_client.py", "-k", "pause or backpressure")
PARSER_TESTS = ("tests/unit/test_client_parser.py", "tests/unit/test_client_roundtrip.py")
CLIENT_EOF_TESTS = ("tests/integration/test_client.py", "-k", "eof or unfinished")
GARCH_TESTS = ("tests/unit/models/test_garch.py", "tests/unit/models/test_garch_arch_agreement.py")

MUTATIONS: tuple[Mutation, ...] = (
    # -- auth ------------------------------------------------------------------------
    Mutation(
        "ws-skips-authorize",
        "auth",
        "quoteflow/server/streams.py",
        "    claims = authorize(view, state)\n",
        '    claims = None if view.request.path == "/ws" else authorize(view, state)\n',
        WS_AUTH_TESTS,
        "/ws subscribes without checking the token (the audit's surviving mutation)",
    ),
    Mutation(
        "ws-any-origin",
        "auth",
        "quoteflow/server/ws.py",
        "        if super().check_origin(origin):\n",
        "        if True:\n",
        WS_AUTH_TESTS,
        "/ws accepts a handshake from any Origin (cross-site WebSocket hijacking)",
    ),
    Mutation(
        "token-exp-not-verified",
        "auth",
        "quoteflow/server/auth.py",
        'options={"require": ["exp"]}',
        'options={"require": ["exp"], "verify_exp": False}',
        AUTH_TESTS,
        "an expired token is accepted",
    ),
    Mutation(
        "symbols-claim-not-enforced",
        "auth",
        "quoteflow/server/request.py",
        "        claims.check_symbols(symbols)\n",
        "        pass\n",
        AUTH_TESTS,
        "a token may subscribe to symbols outside its claim",
    ),
    Mutation(
        "stream-outlives-exp",
        "auth",
        "quoteflow/server/streams.py",
        "stream.expire_at(max(claims.seconds_left(), 0.0))",
        "stream.expire_at(max(claims.seconds_left(), 0.0) + 3600)",
        AUTH_TESTS,
        "a stream keeps running past its token's exp",
    ),
    # -- resume ----------------------------------------------------------------------
    Mutation(
        "replay-duplicates-last-seen",
        "resume",
        "quoteflow/broker/memory.py",
        "self.fanout.replay_after(sub, after)",
        "self.fanout.replay_after(sub, after - 1)",
        RESUME_TESTS,
        "resume replays the Last-Event-ID event itself again (a duplicate)",
    ),
    Mutation(
        "replay-skips-one",
        "resume",
        "quoteflow/broker/memory.py",
        "self.fanout.replay_after(sub, after)",
        "self.fanout.replay_after(sub, after + 1)",
        RESUME_TESTS,
        "resume misses the first event after Last-Event-ID (a gap)",
    ),
    Mutation(
        "evicted-by-one-no-reset",
        "resume",
        "quoteflow/broker/memory.py",
        "        if after < oldest - 1:\n",
        "        if after < oldest - 2:\n",
        RESUME_TESTS,
        "an id evicted by exactly one event resumes silently with a gap instead of a reset",
    ),
    Mutation(
        "last-event-id-header-ignored",
        "resume",
        "quoteflow/server/streams.py",
        'last_id = request.headers.get("Last-Event-ID") or last_argument(view, "lastEventId")',
        'last_id = last_argument(view, "lastEventId")',
        RESUME_TESTS,
        "the Last-Event-ID header (what EventSource sends) is ignored",
    ),
    Mutation(
        "redis-replay-duplicate",
        "resume",
        "quoteflow/broker/redis/consumer.py",
        "self.fanout.replay_after(sub, after)",
        "self.fanout.replay_after(sub, after - 1)",
        REDIS_TESTS,
        "Redis resume replays the Last-Event-ID event again (the audit's timeout catch)",
    ),
    # -- slow consumer ---------------------------------------------------------------
    Mutation(
        "backlog-unbounded",
        "slow consumer",
        "quoteflow/broker/base.py",
        "        self._backlog += len(chunk)\n"
        "        if self._backlog > self.max_backlog_bytes:\n"
        "            # The client does not drain",
        "        self._backlog += len(chunk)\n"
        "        if False:\n"
        "            # The client does not drain",
        SLOW_TESTS,
        "a client that stops reading is never cut off (memory grows without bound)",
    ),
    Mutation(
        "slow-consumer-socket-left-open",
        "slow consumer",
        "quoteflow/server/streams.py",
        '(backlog over bound)", self.ip)\n'
        "        # The writer may have bytes parked in tornado's buffer for a socket the client\n"
        "        # does not read; closing the stream fails that write and ends the handler.\n"
        "        self.cut()\n",
        '(backlog over bound)", self.ip)\n',
        SLOW_TESTS,
        "the subscription of a slow consumer closes but its socket stays open",
    ),
    Mutation(
        "client-never-pauses",
        "slow consumer",
        "quoteflow/client/stream.py",
        "if self._queue.qsize() > self.max_queue and not self._closed:",
        "if False and not self._closed:",
        CLIENT_PAUSE_TESTS,
        "the client reads on while its consumer lags (no TCP backpressure, queue unbounded)",
    ),
    # -- parser at EOF ---------------------------------------------------------------
    Mutation(
        "finish-keeps-pending-data",
        "parser EOF",
        "quoteflow/wire/parser.py",
        "        :attr:`retry` as an ``EventSource`` keeps them across reconnections.\n"
        '        """\n'
        "        self._start_stream()\n",
        "        :attr:`retry` as an ``EventSource`` keeps them across reconnections.\n"
        '        """\n'
        "        data, kind = self._data, self._event_type\n"
        "        self._start_stream()\n"
        "        self._data, self._event_type = data, kind\n",
        PARSER_TESTS + CLIENT_EOF_TESTS[:1],
        "the unfinished event's data and type survive finish() into the next stream",
    ),
    Mutation(
        "finish-keeps-open-line",
        "parser EOF",
        "quoteflow/wire/parser.py",
        "        :attr:`retry` as an ``EventSource`` keeps them across reconnections.\n"
        '        """\n'
        "        self._start_stream()\n",
        "        :attr:`retry` as an ``EventSource`` keeps them across reconnections.\n"
        '        """\n'
        "        partial = self._partial\n"
        "        self._start_stream()\n"
        "        self._partial = partial\n",
        PARSER_TESTS,
        "a line cut by EOF is glued to the next stream's first line",
    ),
    Mutation(
        # finish() alone is an equivalent mutant: the client makes a fresh parser for
        # each connection. Reusing the parser without ending the stream is the real bug.
        "client-reuses-parser-without-finish",
        "parser EOF",
        "quoteflow/client/stream.py",
        "        parser = SSEParser(last_event_id=self.last_event_id, retry=self.retry)\n",
        "        parser = self.__dict__.setdefault(\n"
        '            "_one_parser", SSEParser(last_event_id=self.last_event_id, retry=self.retry)\n'
        "        )\n",
        CLIENT_EOF_TESTS,
        "the client carries one parser across connections without ending the stream",
        also=(("quoteflow/client/stream.py", "            parser.finish()\n", "            pass\n"),),
    ),
    Mutation(
        "id-buffer-survives-finish",
        "parser EOF",
        "quoteflow/wire/parser.py",
        '        self._id_buffer = self.last_event_id or ""\n',
        '        self._id_buffer = getattr(self, "_id_buffer", None) or self.last_event_id or ""\n',
        PARSER_TESTS + CLIENT_EOF_TESTS[:1],
        "an id field of the unfinished event becomes the id in force",
    ),
    # -- GARCH likelihood ------------------------------------------------------------
    Mutation(
        "normal-loglik-no-2pi",
        "GARCH likelihood",
        "quoteflow/models/innovations.py",
        "ll = -0.5 * (_LOG_2PI + np.log(sigma2) + ratio)",
        "ll = -0.5 * (np.log(sigma2) + ratio)",
        GARCH_TESTS,
        "the normal log-likelihood drops its constant (same optimum, wrong loglik/AIC)",
    ),
    Mutation(
        "t-density-scale",
        "GARCH likelihood",
        "quoteflow/models/innovations.py",
        "            - 0.5 * math.log(math.pi * (nu - 2.0))\n",
        "            - 0.5 * math.log(math.pi * nu)\n",
        GARCH_TESTS,
        "the standardised t density uses the unstandardised scale constant",
    ),
    Mutation(
        "t-kernel-exponent",
        "GARCH likelihood",
        "quoteflow/models/innovations.py",
        "ll = const - 0.5 * np.log(sigma2) - 0.5 * (nu + 1.0) * log1q",
        "ll = const - 0.5 * np.log(sigma2) - 0.5 * nu * log1q",
        GARCH_TESTS,
        "the t kernel's exponent is nu/2 instead of (nu+1)/2",
    ),
    Mutation(
        "normal-score-sign",
        "GARCH likelihood",
        "quoteflow/models/innovations.py",
        "        dl_de = -e * inv_s\n",
        "        dl_de = e * inv_s\n",
        GARCH_TESTS,
        "the analytic score in mu has the wrong sign (gradient and sandwich wrong)",
    ),
)


def tracked_files(root: Path) -> list[str]:
    """The files of the working tree as git sees them (tracked and new, not ignored)."""
    out = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=root,
        capture_output=True,
        check=True,
    ).stdout.decode()
    return [p for p in out.split("\0") if p and (root / p).is_file()]


def problems(mutation: Mutation, root: Path = ROOT) -> list[str]:
    """Why ``mutation`` does not apply to the tree at ``root`` (empty when it does)."""
    out = []
    for rel, old, _new in mutation.edits:
        path = root / rel
        if not path.is_file():
            out.append(f"{mutation.name}: {rel} does not exist")
            continue
        count = path.read_text(encoding="utf-8").count(old)
        if count != 1:
            out.append(f"{mutation.name}: old text found {count} times in {rel}")
    for arg in mutation.tests:
        if arg.startswith("tests/") and not (root / arg.split("::")[0]).exists():
            out.append(f"{mutation.name}: test path {arg} does not exist")
    return out


def scratch_copy(root: Path, dest: Path) -> None:
    """Copy the working tree's files (no .git, no caches) to ``dest``."""
    for rel in tracked_files(root):
        target = dest / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, target)


@dataclass(frozen=True)
class Outcome:
    mutation: Mutation
    verdict: str  # "caught", "SURVIVED", "caught (hang)", "did not apply"
    seconds: float
    detail: str


def run_one(mutation: Mutation, root: Path = ROOT, verbose: bool = False) -> Outcome:
    """Apply ``mutation`` to a scratch copy of ``root`` and run its tests there."""
    issues = problems(mutation, root)
    if issues:
        return Outcome(mutation, "did not apply", 0.0, "; ".join(issues))
    with tempfile.TemporaryDirectory(prefix=f"mutate-{mutation.name}-") as tmp:
        scratch = Path(tmp)
        scratch_copy(root, scratch)
        for rel, old, new in mutation.edits:
            target = scratch / rel
            text = target.read_text(encoding="utf-8")
            target.write_text(text.replace(old, new, 1), encoding="utf-8")
        env = {**os.environ, "PYTHONPATH": str(scratch), "PYTHONDONTWRITEBYTECODE": "1"}
        cmd = [sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider"]
        cmd += list(mutation.tests)
        t0 = time.monotonic()
        try:
            proc = subprocess.run(
                cmd,
                cwd=scratch,
                env=env,
                capture_output=True,
                text=True,
                timeout=RUN_HANG_GUARD_S,
                check=False,
            )
        except subprocess.TimeoutExpired:
            return Outcome(mutation, "caught (hang)", time.monotonic() - t0, "run timed out")
        seconds = time.monotonic() - t0
    lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
    if verbose:
        print(proc.stdout[-4000:], proc.stderr[-2000:], sep="\n", file=sys.stderr)
    summary = lines[-1] if lines else proc.stderr.strip()[-200:]
    failed = next((ln for ln in lines if ln.startswith(("FAILED tests/", "ERROR tests/"))), "")
    if proc.returncode == 0:
        return Outcome(mutation, "SURVIVED", seconds, summary)
    if proc.returncode in (1, 2) and failed:
        hang = "Timeout (>" in proc.stdout  # pytest-timeout's, not a test's own guard
        verdict = "caught (by pytest timeout)" if hang else "caught"
        return Outcome(mutation, verdict, seconds, failed.split(" - ")[0])
    return Outcome(mutation, f"error (exit {proc.returncode})", seconds, summary)


def table(outcomes: list[Outcome]) -> str:
    rows = [
        "| area | mutation | planted bug | tests run | verdict | first failing test | s |",
        "|---|---|---|---|---|---|---:|",
    ]
    for o in outcomes:
        m = o.mutation
        tests = " ".join(a.removeprefix("tests/") for a in m.tests)
        detail = o.detail.removeprefix("FAILED ").removeprefix("ERROR ").replace("|", "\\|")
        if len(detail) > 110:  # a parametrised id can be a whole token
            detail = detail[:107] + "..."
        rows.append(
            f"| {m.area} | `{m.name}` | {m.what} | `{tests}` | **{o.verdict}** | "
            f"`{detail.removeprefix('tests/')}` | {o.seconds:.0f} |"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-k", dest="match", help="only mutations whose name contains this")
    parser.add_argument("--list", action="store_true", help="list the mutations and exit")
    parser.add_argument("--check", action="store_true", help="only check that all apply")
    parser.add_argument("-v", "--verbose", action="store_true", help="show pytest output")
    args = parser.parse_args(argv)
    chosen = [m for m in MUTATIONS if not args.match or args.match in m.name]
    if args.list:
        for m in chosen:
            print(f"{m.name:32} {m.area:16} {m.what}")
        return 0
    if args.check:
        issues = [p for m in chosen for p in problems(m)]
        print("\n".join(issues) or f"all {len(chosen)} mutations apply")
        return 1 if issues else 0
    outcomes = []
    for m in chosen:
        print(f"{m.name} ...", end=" ", flush=True, file=sys.stderr)
        outcome = run_one(m, verbose=args.verbose)
        print(f"{outcome.verdict} ({outcome.seconds:.0f} s)", file=sys.stderr)
        outcomes.append(outcome)
    print(table(outcomes))
    caught = sum(o.verdict.startswith("caught") for o in outcomes)
    print(f"\n{caught} of {len(outcomes)} mutations caught.")
    return 0 if caught == len(outcomes) else 1


if __name__ == "__main__":
    sys.exit(main())
