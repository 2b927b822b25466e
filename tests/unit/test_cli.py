"""The ``quoteflow`` command: fit and simulate, and one-line errors for user mistakes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from quoteflow.cli import MEANREV_TICKER, _os_error_text, build_parser, main
from quoteflow.models import GBM, MeanReversion

ROOT = Path(__file__).resolve().parents[2]


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def write_prices(tmp_path: Path, prices: np.ndarray, name: str = "p.csv") -> Path:
    path = tmp_path / name
    dates = pd.bdate_range("2020-01-01", periods=prices.size)
    pd.DataFrame({"Date": dates, "Close": prices}).to_csv(path, index=False)
    return path


def test_fit_shipped_ticker_prints_a_readable_summary(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["fit", "MSFT", "--model", "gbm"], capsys)
    assert code == 0, err
    assert "GBM fit (gbm)" in out
    assert "mu" in out and "sigma" in out and "log-likelihood" in out
    assert "observations            3269" in out
    assert err == ""


def test_fit_json_parses_and_matches_the_library(capsys: pytest.CaptureFixture[str]) -> None:
    from quoteflow import data

    code, out, _ = run(["fit", "ibm", "--model", "meanrev", "--json"], capsys)
    assert code == 0
    d = json.loads(out)
    ref = MeanReversion.fit(data.load("IBM")["adj_close"])
    assert d["model"] == "meanrev"
    assert d["params"]["kappa"] == pytest.approx(ref.params["kappa"], rel=1e-12)
    assert d["nobs"] == ref.nobs


def test_fit_csv_file_with_column_and_dt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    prices = GBM(0.1, 0.3).simulate(300, seed=2)[:, 0]
    path = write_prices(tmp_path, prices)
    code, out, _ = run(
        ["fit", str(path), "--model", "gbm", "--column", "close", "--dt", "1/52", "--json"], capsys
    )
    assert code == 0
    d = json.loads(out)
    ref = GBM.fit(prices, dt=1 / 52)
    assert d["dt"] == pytest.approx(1 / 52)
    assert d["params"]["sigma"] == pytest.approx(ref.params["sigma"], rel=1e-12)


def test_fit_garch_options(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["fit", "GOOG", "--model", "garch", "--dist", "t", "--mean", "zero", "--json"], capsys
    )
    assert code == 0, err
    d = json.loads(out)
    assert d["model"] == "garch" and "nu" in d["params"] and "mu" not in d["params"]


def _one_line_error(code: int, out: str, err: str, *fragments: str) -> None:
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("quoteflow: error: ")
    assert "Traceback" not in err
    for f in fragments:
        assert f in lines[0], lines[0]


def test_wrong_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_prices(tmp_path, GBM(0.1, 0.3).simulate(50, seed=1)[:, 0])
    _one_line_error(
        *run(["fit", str(path), "--model", "gbm", "--column", "Volume"], capsys),
        "no column 'Volume'",
        "Close",
    )
    _one_line_error(
        *run(["fit", "AAPL", "--model", "gbm", "--column", "vwap"], capsys),
        "no column 'vwap'",
        "adj_close",
    )


def test_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.csv"
    _one_line_error(
        *run(["fit", str(missing), "--model", "gbm"], capsys), "no such file", "nope.csv", "AAPL"
    )


def test_non_numeric_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.csv"
    path.write_text("Date,Close\n2020-01-01,10\n2020-01-02,abc\n")
    _one_line_error(
        *run(["fit", str(path), "--model", "gbm"], capsys), "not numeric", "'abc'", "line 3"
    )


def test_too_short_series(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_prices(tmp_path, GBM(0.1, 0.3).simulate(10, seed=1)[:, 0])
    _one_line_error(
        *run(["fit", str(path), "--model", "meanrev"], capsys), "too short", "need at least 30"
    )


def test_no_mean_reversion_is_a_user_error(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        *run(["fit", "AAPL", "--model", "meanrev"], capsys), "no mean reversion detected", "GBM"
    )


def test_meanrev_on_a_trending_ticker_suggests_the_one_that_reverts(
    capsys: pytest.CaptureFixture[str],
) -> None:
    _one_line_error(
        *run(["fit", "AAPL", "--model", "meanrev"], capsys),
        f"try: quoteflow fit {MEANREV_TICKER} --model meanrev",
    )
    code, out, err = run(["fit", MEANREV_TICKER, "--model", "meanrev", "--json"], capsys)
    assert code == 0, err
    assert json.loads(out)["params"]["kappa"] > 0


def test_meanrev_refusal_on_a_csv_suggests_no_ticker(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_prices(tmp_path, GBM(0.3, 0.2).simulate(500, seed=3)[:, 0])
    code, _out, err = run(["fit", str(path), "--model", "meanrev"], capsys)
    if code == 2:  # a random walk can look mean-reverting by chance; only a refusal counts
        assert "try: quoteflow fit" not in err


def test_garch_options_with_another_model(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        *run(["fit", "AAPL", "--model", "gbm", "--dist", "t"], capsys),
        "--dist only applies to --model garch, not gbm",
    )
    _one_line_error(
        *run(["fit", "AAPL", "--model", "gbm", "--dist", "t", "--mean", "zero"], capsys),
        "--dist and --mean only apply to --model garch",
    )


def test_usage_error_has_one_prefix(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["fit", "AAPL", "--model", "bogus"], capsys)
    _one_line_error(code, out, err, "argument --model: invalid choice", "see quoteflow fit --help")
    assert err.count("quoteflow") == 2, err  # the prefix and the --help hint, not "quoteflow fit:"


def test_bad_parameter_names_the_model_once(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        ["simulate", "--model", "gbm", "--steps", "3", "--param", "sigma=-1"], capsys
    )
    _one_line_error(code, out, err, "bad parameter for model 'gbm': parameter sigma must be > 0")
    assert "gbm: parameter" not in err


def test_directory_as_prices_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = run(["fit", str(tmp_path), "--model", "gbm"], capsys)
    _one_line_error(code, out, err, f"{tmp_path} is a directory, not a CSV file")
    assert "Errno" not in err


def test_missing_prices_names_both_choices(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["fit", "nothere", "--model", "gbm"], capsys)
    _one_line_error(code, out, err, "give a CSV path or a shipped ticker (AAPL, GOOG, IBM, MSFT)")
    assert "DataFrame" not in err


def test_os_errors_read_as_words() -> None:
    text = _os_error_text(IsADirectoryError(21, "Is a directory", "/tmp"))
    assert text == "/tmp: is a directory"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["fit", "AAPL"],  # --model is required
        ["fit", "AAPL", "--model", "heston"],
        ["fit", "AAPL", "--model", "gbm", "--dt", "0"],
        ["fit", "AAPL", "--model", "gbm", "--dt", "1/x"],
        ["simulate", "--model", "gbm", "--steps", "-3"],
        ["simulate", "--model", "gbm", "--steps", "3", "--param", "novalue"],
    ],
)
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _out, err = run(argv, capsys)
    assert code == 2
    assert "error:" in err and "Traceback" not in err


def test_help_mentions_shipped_tickers(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(["fit", "--help"], capsys)
    assert code == 0
    assert "AAPL, GOOG, IBM, MSFT" in " ".join(out.split())


def test_simulate_writes_csv_with_defaults(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out_path = tmp_path / "sim.csv"
    argv = [
        "simulate",
        "--model",
        "gbm",
        "--steps",
        "20",
        "--paths",
        "3",
        "--seed",
        "4",
        "--out",
        str(out_path),
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0 and "wrote 3 path(s) x 20 step(s) of gbm(mu=0.05, sigma=0.2)" in out
    df = pd.read_csv(out_path)
    assert list(df.columns) == ["step", "path_0", "path_1", "path_2"]
    assert df["step"].tolist() == list(range(21))
    expected = GBM(0.05, 0.2).simulate(20, n_paths=3, s0=100.0, seed=4)
    np.testing.assert_allclose(df.iloc[:, 1:].to_numpy(), expected, rtol=1e-15)
    # Same seed, same file.
    assert run(argv, capsys)[0] == 0
    pd.testing.assert_frame_equal(pd.read_csv(out_path), df)


def test_simulate_params_and_stdout(capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "simulate",
        "--model",
        "meanrev",
        "--param",
        "kappa=3",
        "--param",
        "sigma=0.1",
        "--s0",
        "50",
        "--steps",
        "5",
        "--seed",
        "1",
    ]
    code, out, _ = run(argv, capsys)
    assert code == 0
    lines = out.strip().splitlines()
    assert lines[0] == "step,path_0" and len(lines) == 7
    assert lines[1] == "0,50.0"
    # theta defaults to s0
    expected = MeanReversion(3.0, 50.0, 0.1).simulate(5, s0=50.0, seed=1)[:, 0]
    np.testing.assert_allclose([float(x.split(",")[1]) for x in lines[1:]], expected, rtol=1e-15)


def test_simulate_from_fit_starts_at_the_last_price(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from quoteflow import data

    out_path = tmp_path / "g.csv"
    argv = [
        "simulate",
        "--model",
        "garch",
        "--from-fit",
        "MSFT",
        "--steps",
        "10",
        "--paths",
        "2",
        "--seed",
        "3",
        "--out",
        str(out_path),
    ]
    code, _out, err = run(argv, capsys)
    assert code == 0, err
    df = pd.read_csv(out_path)
    last = float(data.load("MSFT")["adj_close"].iloc[-1])
    assert df.loc[0, "path_0"] == pytest.approx(last)
    assert df.shape == (11, 3)


def test_simulate_bad_parameters(capsys: pytest.CaptureFixture[str]) -> None:
    _one_line_error(
        *run(["simulate", "--model", "gbm", "--steps", "3", "--param", "sigma=-1"], capsys),
        "sigma must be > 0",
    )
    _one_line_error(
        *run(["simulate", "--model", "gbm", "--steps", "3", "--param", "vol=1"], capsys),
        "unknown parameter(s) vol",
        "mu, sigma",
    )


def test_simulate_unwritable_output(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "no" / "such" / "dir.csv"
    code, out, err = run(["simulate", "--model", "gbm", "--steps", "3", "--out", str(bad)], capsys)
    _one_line_error(code, out, err, f"--out {bad}: directory {bad.parent} does not exist")
    code, out, err = run(
        ["simulate", "--model", "gbm", "--steps", "3", "--out", str(tmp_path)], capsys
    )
    _one_line_error(code, out, err, f"--out {tmp_path}: is a directory")


def test_fit_table_columns_stay_apart_in_exponent_form() -> None:
    from quoteflow.models.base import FitResult

    tiny = FitResult(
        model=GBM(3.67183e-17, 0.2),
        params={"mu": -3.67183e-17, "sigma": 0.0162128},
        std_err={"mu": 1.62128e-2, "sigma": 2.26477e-15},
        loglik=1.0,
        nobs=100,
        dt=1 / 252,
    )
    rows = [line for line in tiny.summary().splitlines() if line.startswith(("mu ", "sigma "))]
    assert len(rows) == 2
    for row in rows:
        name, est, se, t, _lo, _hi = (
            row.replace("[", " ").replace("]", " ").replace(",", " ").split()
        )
        assert float(est) == tiny.params[name] and float(se) == tiny.std_err[name]
        assert float(t) == pytest.approx(tiny.params[name] / tiny.std_err[name], rel=1e-5)


def _readme_commands() -> list[list[str]]:
    """The ``$ quoteflow fit`` / ``$ quoteflow simulate`` lines of the README, in order."""
    import shlex

    out = []
    for line in (ROOT / "README.md").read_text().splitlines():
        if line.startswith(("$ quoteflow fit ", "$ quoteflow simulate ")):
            out.append(shlex.split(line[2:], comments=True)[1:])
    return out


def test_every_readme_fit_example_runs(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    commands = _readme_commands()
    assert sum(argv[0] == "fit" for argv in commands) >= 3, commands
    monkeypatch.chdir(tmp_path)  # simulate --out paths.csv lands here; fit reads it back
    for argv in commands:
        code, out, err = run(argv, capsys)
        assert code == 0, (argv, err)
        if argv[0] == "fit":
            assert "fit (" in out or '"params"' in out, (argv, out)


def test_parser_has_one_subparser_per_command() -> None:
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    assert {"fit", "simulate"} <= set(sub.choices)  # type: ignore[arg-type]


def test_python_dash_m_entry_point_exit_codes(tmp_path: Path) -> None:
    ok = subprocess.run(
        [sys.executable, "-m", "quoteflow", "fit", "GOOG", "--model", "gbm"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert ok.returncode == 0 and "GBM fit" in ok.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "quoteflow", "fit", str(tmp_path / "x.csv"), "--model", "gbm"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=60,
    )
    assert bad.returncode == 2
    assert bad.stderr.count("\n") == 1 and bad.stderr.startswith("quoteflow: error: no such file")


@pytest.mark.parametrize(
    ("params", "dt", "fragments"),
    [
        (
            ["sigma=1e155"],
            "1/252",
            (
                "gbm: parameter sigma = 1e+155 cannot be simulated at a step of dt = 0.00396825",
                "allowed at this dt: 0 < sigma <= 15.8745",
            ),
        ),
        (["mu=1e300"], "1/252", ("gbm: parameter mu = 1e+300", "|mu| <= 252")),
        (["sigma=1.5"], "1", ("parameter sigma = 1.5", "0 < sigma <= 1")),
        (["mu=" + "1" * 400], "1/252", ("parameter mu must be finite, got inf",)),
    ],
)
def test_defect4_simulate_param_door_gives_the_rule_and_range(
    capsys: pytest.CaptureFixture[str], params: list[str], dt: str, fragments: tuple[str, ...]
) -> None:
    """Issue 10 defect 4, CLI door: ``--param`` values the model cannot simulate at ``--dt``
    are one line, exit 2, with the same message as ``PUT /symbols`` and the TOML config."""
    argv = ["simulate", "--model", "gbm", "--steps", "3", "--dt", dt]
    for p in params:
        argv += ["--param", p]
    _one_line_error(*run(argv, capsys), *fragments)


def test_defect4_serve_config_door_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "market.toml"
    path.write_text(
        'tick_interval = 0.25\n[symbols.X]\nmodel = "garch"\n'
        "params = { mu = 0.05, omega = 1e300, alpha = 0.08, beta = 0.9 }\n"
    )
    _one_line_error(
        *run(["serve", "--config", str(path), "--port", "0"], capsys),
        "market.toml: symbols.X.params.omega: garch: parameter omega = 1e+300 cannot be "
        "simulated at a step of dt = 0.000992063 years",
        "allowed at this dt: 0 < omega <= ",
    )


def test_serve_calendar_start_and_trade_rate_build_the_market() -> None:
    from quoteflow.cli._source import build_source
    from quoteflow.market import Market

    args = build_parser().parse_args(
        [
            "serve",
            "--universe",
            "2",
            "--calendar",
            "XNYS",
            "--start",
            "2024-11-29",
            "--trade-rate",
            "4",
            "--seed",
            "1",
        ]
    )
    market = build_source(args)
    assert isinstance(market, Market)
    assert market.sim_clock.calendar == "XNYS"
    assert market.trade_settings is not None and market.trade_settings.rate == 4.0
    first = market.step(now=0.0)
    assert first[0].event == "session" and first[0].data["sim_ts"] == "2024-11-29T14:30:00.000Z"


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--replay", "AAPL", "--calendar", "XNYS"], "--calendar do not apply to --replay"),
        (["--universe", "2", "--calendar", "NOPE"], "calendar: unknown exchange calendar 'NOPE'"),
        (["--universe", "2", "--start", "soon"], "start: not a date or date-time: 'soon'"),
        (["--universe", "2", "--trade-rate", "0"], "trade rate"),
    ],
)
def test_serve_session_options_errors_are_one_line(
    argv: list[str], fragment: str, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_line_error(*run(["serve", "--port", "0", *argv], capsys), fragment)


def test_simulate_merton_has_defaults_and_takes_lambda(capsys: pytest.CaptureFixture[str]) -> None:
    from quoteflow.models import MertonJump

    code, out, _ = run(["simulate", "--model", "merton", "--steps", "4", "--seed", "2"], capsys)
    assert code == 0
    got = [float(x.split(",")[1]) for x in out.strip().splitlines()[1:]]
    want = MertonJump(0.05, 0.2, 10.0, -0.02, 0.04).simulate(4, seed=2)[:, 0]
    np.testing.assert_allclose(got, want, rtol=1e-15)
    code, _, err = run(
        ["simulate", "--model", "merton", "--steps", "2", "--param", "lambda=-1"], capsys
    )
    assert code == 2 and "lambda" in err
