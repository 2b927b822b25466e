"""Screenshot the dashboard for the docs, in Debian's headless Chromium through Playwright.

``chromium --headless --screenshot --virtual-time-budget=...`` never finishes on an SSE
page (the stream keeps the page busy forever), so this script drives the browser instead:
it waits until the page has drawn live data, then takes the picture.

    python scripts/screenshot.py                         # docs/dashboard.png, line charts
    python scripts/screenshot.py --chart candles --out /tmp/candles.png
    python scripts/screenshot.py --url http://127.0.0.1:8080/   # a server already running

Without ``--url`` it starts ``quoteflow serve --port 0 --seed 1 --tick-interval 0.1`` (the
default market) and stops it afterwards. Needs the ``playwright`` package (test extras)
and ``/usr/bin/chromium`` (``apt-get install chromium``); it never downloads a browser.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
URL_RE = re.compile(r"http://[^\s/]+:\d+/")


@contextlib.contextmanager
def _server(url: str | None, seed: int, timeout: float) -> Iterator[str]:
    """``url``, or the URL of a ``quoteflow serve`` started (and stopped) here."""
    if url:
        yield url if url.endswith("/") else url + "/"
        return
    cmd = [sys.executable, "-m", "quoteflow", "serve", "--port", "0", "--seed", str(seed)]
    cmd += ["--tick-interval", "0.1", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        match = URL_RE.search(line)
        if match is None:
            raise SystemExit(f"error: quoteflow serve printed no URL (got {line!r})")
        yield match.group(0)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python scripts/screenshot.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--url", default=None, help="dashboard of a running server (default: start one)")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "dashboard.png", help="PNG file")
    p.add_argument("--chart", choices=("line", "candles"), default="line", help="chart view")
    p.add_argument("--ticks", type=int, default=240, help="ticks to wait for before the shot")
    p.add_argument("--width", type=int, default=1280, help="viewport width (CSS px)")
    p.add_argument("--height", type=int, default=800, help="viewport height (CSS px)")
    p.add_argument("--seed", type=int, default=1, help="seed of the server started here")
    p.add_argument("--chromium", default=CHROMIUM, help=f"browser binary (default {CHROMIUM})")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds to wait for the page")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Take the screenshot; 0 on success, 1 when the page never went live."""
    args = parse_args(argv)
    try:
        from playwright.sync_api import Error as PlaywrightError
        from playwright.sync_api import sync_playwright
    except ImportError:
        print("error: playwright is not installed: pip install -e '.[test]'", file=sys.stderr)
        return 1
    if not Path(args.chromium).is_file():
        print(f"error: no browser at {args.chromium}: apt-get install chromium", file=sys.stderr)
        return 1
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with _server(args.url, args.seed, args.timeout) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=args.chromium,
            args=["--headless=new", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        try:
            page = browser.new_page(
                viewport={"width": args.width, "height": args.height}, device_scale_factor=1
            )
            page.goto(f"{url}?chart={args.chart}")
            try:
                # Live and enough ticks for a chart worth looking at, then one more frame.
                page.wait_for_function(
                    "(n) => { const d = window.quoteflowDashboard;"
                    " return d && d.state === 'live' && d.ticks >= n; }",
                    arg=args.ticks,
                    timeout=args.timeout * 1000,
                )
                frames = page.evaluate("() => window.quoteflowDashboard.framesRendered")
                page.wait_for_function(
                    "(n) => window.quoteflowDashboard.framesRendered > n", arg=frames
                )
            except PlaywrightError as exc:
                print(f"error: the dashboard at {url} did not go live: {exc}", file=sys.stderr)
                return 1
            page.screenshot(path=str(args.out), scale="css", animations="disabled")
        finally:
            browser.close()
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
