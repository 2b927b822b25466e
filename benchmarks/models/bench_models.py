"""Model benchmarks: quoteflow vs its peers, side by side in one run.

Run from the repository root::

    python -m benchmarks.models.bench_models            # full run (~1 minute)
    python -m benchmarks.models.bench_models --quick    # fewer repeats, smoke run

Measures (medians of repeated wall-clock runs, ``time.perf_counter``):

(a) GARCH(1,1) normal, constant-mean fit on daily percent log returns: the shipped AAPL and
    MSFT adjusted closes (3269 returns each) and a simulated series of 5000 returns;
    ``GARCH.fit`` vs ``arch_model(...).fit(disp="off")``.
(b) GARCH simulation of 1,000,000 steps on one path: ``GARCH.simulate`` vs ``arch``'s
    ``model.simulate`` (``burn=0``).
(c) GBM simulation of 1000 paths x 10,000 steps vs the floor: the time numpy's default
    Generator needs to draw the 10^7 standard normals alone.
(d) GJR-GARCH(1,1,1) with skewed-t innovations (issue 15), constant mean, on the shipped
    AAPL, MSFT, IBM and GOOG returns: ``GARCH.fit(prices, dist="skewt", o=1)`` vs
    ``arch_model(r, mean="Constant", vol="GARCH", p=1, o=1, q=1, dist="skewt").fit()``.
    ``--only gjr`` runs this case alone (its JSON file is ``models-gjr-<date>.json``).

Prints a markdown table and writes ``benchmarks/results/models-<date>.json`` with the
numbers and the machine (cpu count, python, numpy, scipy, arch, BLAS thread env vars).
``arch`` is a test/benchmark-only dependency, never imported by quoteflow itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import os
import platform
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from quoteflow.data import load
from quoteflow.models.garch import GARCH

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
GARCH_TRUE = GARCH(mu=0.05, omega=0.02, alpha=0.08, beta=0.9)


def _median_time(fn: Callable[[], Any], repeat: int, warmup: int = 1) -> dict[str, Any]:
    """Median, min and all wall times of ``repeat`` calls (after ``warmup`` untimed calls)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}


def _paired(
    ours: Callable[[], Any], theirs: Callable[[], Any], repeat: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Time two functions alternately, so load from other processes hits both alike."""
    ours()
    theirs()
    t_ours, t_theirs = [], []
    for _ in range(repeat):
        t0 = time.perf_counter()
        ours()
        t1 = time.perf_counter()
        theirs()
        t2 = time.perf_counter()
        t_ours.append(t1 - t0)
        t_theirs.append(t2 - t1)

    def summary(times: list[float]) -> dict[str, Any]:
        return {"median_s": statistics.median(times), "min_s": min(times), "times_s": times}

    return summary(t_ours), summary(t_theirs)


def _machine() -> dict[str, Any]:
    import scipy

    info: dict[str, Any] = {
        "cpu_count": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "thread_env": {
            k: v
            for k, v in os.environ.items()
            if k.startswith(("OPENBLAS", "OMP_", "MKL_", "NUMEXPR"))
        },
    }
    try:
        import arch

        info["arch"] = arch.__version__
    except ImportError:  # pragma: no cover - arch is in the test extra
        info["arch"] = None
    return info


def _fit_vs_arch(
    title: str,
    series: dict[str, np.ndarray],
    fit_kwargs: dict[str, Any],
    arch_kwargs: dict[str, Any],
    repeat: int,
) -> list[dict[str, Any]]:
    """``GARCH.fit(prices, **fit_kwargs)`` vs ``arch_model(r, **arch_kwargs).fit()`` per series."""
    from arch import arch_model

    rows = []
    for label, prices in series.items():
        r = 100 * np.diff(np.log(prices))

        def arch_fit(r: np.ndarray = r) -> Any:
            return arch_model(r, mean="Constant", vol="GARCH", **arch_kwargs).fit(disp="off")

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # arch's DataScaleWarning etc. are not ours
            ours, theirs = _paired(
                functools.partial(GARCH.fit, prices, **fit_kwargs), arch_fit, repeat
            )
        rows.append(
            {
                "case": f"{title}, {label} ({r.size} returns)",
                "quoteflow_s": ours["median_s"],
                "peer": "arch fit()",
                "peer_s": theirs["median_s"],
                "speedup": theirs["median_s"] / ours["median_s"],
                "raw": {"quoteflow": ours, "peer": theirs},
            }
        )
    return rows


def bench_garch_fit(repeat: int) -> list[dict[str, Any]]:
    """(a) GARCH normal fit, quoteflow vs arch, on real and simulated returns."""
    series: dict[str, np.ndarray] = {
        "AAPL": load("AAPL")["adj_close"].to_numpy(),
        "MSFT": load("MSFT")["adj_close"].to_numpy(),
        "simulated": GARCH_TRUE.simulate(5000, seed=2026)[:, 0],
    }
    return _fit_vs_arch("GARCH fit, normal", series, {}, {"p": 1, "q": 1}, repeat)


def bench_gjr_skewt_fit(repeat: int) -> list[dict[str, Any]]:
    """(d) GJR-GARCH(1,1,1) skewed-t fit, quoteflow vs arch, on the four shipped tickers."""
    series = {t: load(t)["adj_close"].to_numpy() for t in ("AAPL", "MSFT", "IBM", "GOOG")}
    return _fit_vs_arch(
        "GJR-GARCH fit, skewt",
        series,
        {"dist": "skewt", "o": 1},
        {"p": 1, "o": 1, "q": 1, "dist": "skewt"},
        repeat,
    )


def bench_garch_simulate(repeat: int, n_steps: int = 1_000_000) -> dict[str, Any]:
    """(b) GARCH simulation of one long path, quoteflow vs arch."""
    from arch import arch_model

    ours = _median_time(lambda: GARCH_TRUE.simulate(n_steps, seed=1), repeat)
    am = arch_model(None, mean="Constant", vol="GARCH", p=1, q=1)
    params = [GARCH_TRUE.mu, GARCH_TRUE.omega, GARCH_TRUE.alpha, GARCH_TRUE.beta]
    # arch's simulation is a per-step Python loop (~2 s per million steps): fewer repeats.
    theirs = _median_time(
        lambda: am.simulate(params, nobs=n_steps, burn=0), max(1, repeat // 3), warmup=0
    )
    return {
        "case": f"GARCH simulate, {n_steps:,} steps x 1 path",
        "quoteflow_s": ours["median_s"],
        "peer": "arch simulate()",
        "peer_s": theirs["median_s"],
        "speedup": theirs["median_s"] / ours["median_s"],
        "raw": {"quoteflow": ours, "peer": theirs},
    }


def bench_gbm_simulate(repeat: int, n_paths: int = 1000, n_steps: int = 10_000) -> dict[str, Any]:
    """(c) GBM simulation vs the floor of drawing the normals alone."""
    from quoteflow.models import GBM

    model = GBM(mu=0.08, sigma=0.2)
    rng = np.random.default_rng(1)
    ours, floor = _paired(
        lambda: model.simulate(n_steps, n_paths=n_paths, seed=1),
        lambda: rng.standard_normal(n_paths * n_steps),
        repeat,
    )
    return {
        "case": f"GBM simulate, {n_paths} paths x {n_steps:,} steps",
        "quoteflow_s": ours["median_s"],
        "peer": f"floor: draw {n_paths * n_steps:.0e} normals",
        "peer_s": floor["median_s"],
        "speedup": floor["median_s"] / ours["median_s"],
        "raw": {"quoteflow": ours, "peer": floor},
    }


def markdown(rows: list[dict[str, Any]]) -> str:
    """The results as a markdown table (times in ms, speedup = peer time / our time)."""
    lines = [
        "| case | quoteflow (ms) | peer | peer (ms) | peer / quoteflow |",
        "|---|---:|---|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['case']} | {1e3 * r['quoteflow_s']:.1f} | {r['peer']} | "
            f"{1e3 * r['peer_s']:.1f} | {r['speedup']:.2f}x |"
        )
    return "\n".join(lines)


def run(
    repeat: int = 15, out_dir: Path | None = RESULTS, only: str | None = None
) -> dict[str, Any]:
    """Run the model benchmarks (all, or ``only="gjr"``); write JSON unless ``out_dir`` is None."""
    if only == "gjr":
        rows = bench_gjr_skewt_fit(repeat)
    else:
        rows = [
            *bench_garch_fit(repeat),
            *bench_gjr_skewt_fit(repeat),
            bench_garch_simulate(max(3, repeat // 3)),
            bench_gbm_simulate(max(3, repeat // 3)),
        ]
    report = {
        "benchmark": "models",
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "machine": _machine(),
        "repeat": repeat,
        "results": rows,
    }
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        tag = f"{only}-" if only else ""
        path = out_dir / f"models-{tag}{dt.date.today().isoformat()}.json"
        path.write_text(json.dumps(report, indent=2) + "\n")
        report["path"] = str(path)
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--repeat", type=int, default=15, help="timed runs per case (default 15)")
    parser.add_argument("--quick", action="store_true", help="3 repeats: a smoke run")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    parser.add_argument(
        "--only", choices=("gjr",), default=None, help="run one case alone: gjr = (d)"
    )
    args = parser.parse_args(argv)
    repeat = 3 if args.quick else max(1, args.repeat)
    report = run(repeat=repeat, out_dir=None if args.no_save else RESULTS, only=args.only)
    m = report["machine"]
    print(
        f"models benchmark, {report['date']}: {m['cpu_count']} CPUs, python {m['python']}, "
        f"numpy {m['numpy']}, scipy {m['scipy']}, arch {m['arch']}; medians of {repeat} runs"
    )
    print()
    print(markdown(report["results"]))
    if "path" in report:
        print(f"\nwritten: {report['path']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
