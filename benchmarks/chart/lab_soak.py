"""LiveChart soak in real JupyterLab and headless Chromium: JS heap and kernel RSS over time.

    python -m benchmarks.chart.lab_soak                        # 10 min at 5,000 ticks/s
    python -m benchmarks.chart.lab_soak --duration 60 --every 5

A ``quoteflow serve`` feed (50 symbols x 100 ticks/s = 5,000 ticks/s by default, see
:func:`benchmarks.chart.run.feed`) and a JupyterLab server over a temporary directory
holding one generated notebook: a chart subscribed to every symbol, redraws coalesced to
``--interval``. Debian's Chromium (headless, driven by Playwright) opens the notebook and
runs it; the chart then draws for ``--duration`` seconds while this process samples,
every ``--every`` seconds:

- the page's JS heap, ``JSHeapUsedSize`` of the Chrome DevTools Protocol's
  ``Performance.getMetrics``, as it is and after a forced collection
  (``HeapProfiler.collectGarbage``): the second is what the page retains;
- the kernel's RSS (the notebook writes its pid to a file);
- the chart's event counter as the page's status line shows it (the chart kept up);
- whether "IOPub data rate exceeded" (or the message-rate variant) shows anywhere in the
  page or the server's log.

The slope of a least-squares line through the retained heap (and the RSS) over the second
half of the run says whether memory is bounded (about 0) or growing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import secrets
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from benchmarks.chart.run import feed
from benchmarks.fanout.run import RESULTS, free_port, machine_info, memory_kib

#: Launch flags of Debian's Chromium here (as the browser tests use them).
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_FLAGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"]

IOPUB_WARNINGS = ("IOPub data rate exceeded", "IOPub message rate exceeded")

#: The notebook under test: one chart, its kernel's pid in a file beside it.
CELLS = [
    "import os, pathlib\n"
    "from quoteflow.notebook import LiveChart\n"
    "pathlib.Path('kernel.pid').write_text(str(os.getpid()))",
    "chart = LiveChart({url!r}, window=600, interval={interval})\nchart",
]

#: JupyterLab settings: every cell rendered, no news toast over the output.
LAB_SETTINGS = {
    "@jupyterlab/notebook-extension/tracker.jupyterlab-settings": '{"windowingMode": "none"}',
    "@jupyterlab/apputils-extension/notification.jupyterlab-settings": (
        '{"fetchNews": "false", "checkForUpdates": false}'
    ),
}

#: JavaScript: every code cell of the open notebook has an execution number.
ALL_RAN = """() => {
  const p = [...document.querySelectorAll('.jp-NotebookPanel:not(.lm-mod-hidden)'
                                          + ' .jp-CodeCell .jp-InputPrompt')];
  return p.length > 0 && p.every(e => /^\\[\\d+\\]:?$/.test(e.innerText.trim()));
}"""

EVENTS_RE = re.compile(r"\b(\d+) events(?!/s)")


@dataclass
class Sample:
    """One sampling instant."""

    t_s: float
    js_heap_mib: float
    js_heap_after_gc_mib: float
    kernel_rss_mib: float
    events: int


def _notebook(url: str, interval: float) -> dict[str, Any]:
    cells = [
        {
            "cell_type": "code",
            "metadata": {},
            "execution_count": None,
            "outputs": [],
            "source": src.format(url=url, interval=interval),
        }
        for src in CELLS
    ]
    return {
        "cells": cells,
        "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


@contextmanager
def jupyterlab(root: Path, log: Path) -> Iterator[str]:
    """A JupyterLab server over ``root``; yields the notebook base URL with its token."""
    settings = root.parent / "settings"
    for rel, text in LAB_SETTINGS.items():
        (settings / rel).parent.mkdir(parents=True, exist_ok=True)
        (settings / rel).write_text(text)
    repo = str(Path(__file__).resolve().parents[2])
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(p for p in (repo, os.environ.get("PYTHONPATH", "")) if p),
        JUPYTERLAB_SETTINGS_DIR=str(settings),
        JUPYTERLAB_WORKSPACES_DIR=str(root.parent / "workspaces"),
        JUPYTER_RUNTIME_DIR=str(root.parent / "runtime"),
    )
    port, token = free_port(), secrets.token_hex(16)
    args = [f"--port={port}", "--ip=127.0.0.1", f"--ServerApp.token={token}"]
    args += [f"--ServerApp.root_dir={root}", "--no-browser", "--allow-root"]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "jupyterlab", *args],
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        give_up = time.monotonic() + 90  # hang guard for the server's start
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"jupyter lab exited with {proc.returncode}; see {log}")
            try:
                with urllib.request.urlopen(f"{base}/api/status?token={token}", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > give_up:
                    raise RuntimeError(f"jupyter lab did not answer; see {log}") from None
                time.sleep(0.25)  # polling a condition (the server answering)
        yield f"{base}/lab/tree/soak.ipynb?reset&token={token}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def _heap_mib(cdp: Any) -> float:
    metrics = cdp.send("Performance.getMetrics")["metrics"]
    used = next(m["value"] for m in metrics if m["name"] == "JSHeapUsedSize")
    return round(float(used) / 2**20, 2)


def _page_events(page: Any) -> int:
    texts = page.locator(".quoteflow-livechart .widget-html").all_inner_texts()
    found = [int(m.group(1)) for t in texts for m in [EVENTS_RE.search(t)] if m]
    return max(found, default=0)


def _slope_per_min(points: Sequence[tuple[float, float]]) -> float:
    """Least-squares slope of ``(seconds, value)`` points, in value units per minute."""
    if len(points) < 2:
        return 0.0
    n = len(points)
    mt = sum(t for t, _ in points) / n
    mv = sum(v for _, v in points) / n
    den = sum((t - mt) ** 2 for t, _ in points)
    return 0.0 if den == 0 else 60.0 * sum((t - mt) * (v - mv) for t, v in points) / den


def run_soak(
    rate: float, duration: float, every: float, interval: float, work: Path
) -> dict[str, Any]:
    """Open the soak notebook in JupyterLab, sample for ``duration`` s; the results."""
    from playwright.sync_api import sync_playwright

    root = work / "notebooks"
    root.mkdir(parents=True, exist_ok=True)
    samples: list[Sample] = []
    warnings: list[str] = []
    with feed(rate, work) as url, jupyterlab(root, work / "lab.log") as page_url:
        (root / "soak.ipynb").write_text(json.dumps(_notebook(url, interval)))
        os.environ.setdefault("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_FLAGS)
            try:
                page = browser.new_page(viewport={"width": 1280, "height": 1000})
                cdp = page.context.new_cdp_session(page)
                cdp.send("Performance.enable")
                page.goto(page_url)
                page.wait_for_function(
                    "() => document.body.innerText.includes('| Idle')", timeout=90_000
                )
                page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
                page.get_by_text("Run All Cells", exact=True).click()
                page.wait_for_function(ALL_RAN, timeout=90_000)
                page.locator(".quoteflow-livechart .bk-Canvas").first.wait_for(timeout=60_000)
                pid = int((root / "kernel.pid").read_text())
                start = time.monotonic()
                while True:
                    t = time.monotonic() - start
                    heap = _heap_mib(cdp)
                    cdp.send("HeapProfiler.collectGarbage")
                    samples.append(
                        Sample(
                            t_s=round(t, 1),
                            js_heap_mib=heap,
                            js_heap_after_gc_mib=_heap_mib(cdp),
                            kernel_rss_mib=round(memory_kib(pid)[0] / 1024, 1),
                            events=_page_events(page),
                        )
                    )
                    print(json.dumps(asdict(samples[-1])), flush=True)
                    body = page.locator("body").inner_text()
                    warnings += [w for w in IOPUB_WARNINGS if w in body]
                    if t >= duration:
                        break
                    page.wait_for_timeout(min(every, duration - t) * 1000)  # sampling period
                page.screenshot(path=str(work / "soak-end.png"))
            finally:
                browser.close()
    lab_log = (work / "lab.log").read_text(errors="replace")
    warnings += [w for w in IOPUB_WARNINGS if w in lab_log]
    return summarise(samples, warnings, rate, duration)


def summarise(
    samples: Sequence[Sample], warnings: Sequence[str], rate: float, duration: float
) -> dict[str, Any]:
    """Start/middle/end, second-half slopes and the ingest rate of a soak."""
    half = [s for s in samples if s.t_s >= samples[-1].t_s / 2] if samples else []
    first, mid, last = (
        (samples[0], samples[len(samples) // 2], samples[-1])
        if samples
        else (
            None,
            None,
            None,
        )
    )
    span = (last.t_s - first.t_s) if first and last else 0.0
    return {
        "rate": rate,
        "duration_s": duration,
        "samples": [asdict(s) for s in samples],
        "start": asdict(first) if first else None,
        "middle": asdict(mid) if mid else None,
        "end": asdict(last) if last else None,
        "heap_after_gc_slope_mib_per_min": round(
            _slope_per_min([(s.t_s, s.js_heap_after_gc_mib) for s in half]), 3
        ),
        "rss_slope_mib_per_min": round(
            _slope_per_min([(s.t_s, s.kernel_rss_mib) for s in half]), 3
        ),
        "events_per_s": round((last.events - first.events) / span, 1) if span > 0 else 0.0,
        "iopub_warnings": sorted(set(warnings)),
    }


def markdown(result: dict[str, Any], interval: float) -> str:
    """The soak as the table of benchmarks/README.md."""
    rows = [("start", result["start"]), ("middle", result["middle"]), ("end", result["end"])]
    lines = [
        f"# LiveChart soak in JupyterLab + Chromium, {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC",
        "",
        f"One chart, {result['rate']:,.0f} ticks/s offered, redraw interval {interval:g} s, "
        f"{result['duration_s']:g} s; load average {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} CPUs.",
        "",
        "| at | t (s) | JS heap MiB | JS heap after GC MiB | kernel RSS MiB | events |",
        "|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        if s:
            lines.append(
                f"| {name} | {s['t_s']:.0f} | {s['js_heap_mib']:.1f} "
                f"| {s['js_heap_after_gc_mib']:.1f} | {s['kernel_rss_mib']:.0f} "
                f"| {s['events']:,} |"
            )
    lines += [
        "",
        f"Second-half slopes: JS heap after GC {result['heap_after_gc_slope_mib_per_min']:+.3f}"
        f" MiB/min, kernel RSS {result['rss_slope_mib_per_min']:+.3f} MiB/min. "
        f"Events received {result['events_per_s']:,.0f}/s. IOPub rate warnings: "
        f"{', '.join(result['iopub_warnings']) or 'none'}.",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chart.lab_soak", description=__doc__
    )
    parser.add_argument("--rate", type=float, default=5000.0, help="offered ticks/s")
    parser.add_argument("--duration", type=float, default=600.0, help="seconds sampled")
    parser.add_argument("--every", type=float, default=10.0, help="sampling period, s")
    parser.add_argument("--interval", type=float, default=0.05, help="redraw interval, s")
    parser.add_argument("--output-dir", type=Path, default=RESULTS)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    stamp = f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%SZ}"
    with tempfile.TemporaryDirectory(prefix="chart-lab-soak-") as tmp:
        result = run_soak(args.rate, args.duration, args.every, args.interval, Path(tmp))
    text = markdown(result, args.interval)
    print(text)
    args.output_dir.mkdir(parents=True, exist_ok=True)
    out = args.output_dir / f"chart-lab-soak-{stamp}"
    result["machine"] = machine_info()
    result["args"] = {k: str(v) for k, v in vars(args).items()}
    out.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    out.with_suffix(".md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
