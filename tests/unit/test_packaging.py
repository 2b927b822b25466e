"""The package's declared dependencies, environment files and public API stay in step."""

from __future__ import annotations

import ast
import re
import tomllib
from collections.abc import Callable
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())

# conda-forge names that differ from the PyPI ones
CONDA_ALIASES = {"redis": "redis-py"}


def _name(req: str) -> str:
    return re.split(r"[<>=!~\[; ]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _conda_names() -> set[str]:
    names = set()
    for line in (ROOT / "environment.yml").read_text().splitlines():
        m = re.match(r"\s*-\s+([A-Za-z0-9_.\-]+)", line)
        if m and not line.strip().startswith("- -e"):
            names.add(m.group(1).lower().replace("_", "-"))
    return names


def _runtime() -> list[str]:
    project = PYPROJECT["project"]
    reqs = list(project["dependencies"])
    for extra in ("notebook", "scale"):
        reqs += project["optional-dependencies"][extra]
    return [_name(r) for r in reqs]


@pytest.mark.parametrize("dep", _runtime())
def test_runtime_dependency_in_environment_yml(dep: str) -> None:
    assert CONDA_ALIASES.get(dep, dep) in _conda_names(), f"{dep} missing from environment.yml"


def _requirement_lines(path: Path) -> dict[str, str]:
    out = {}
    for line in path.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            out[_name(line)] = line.replace("_", "-").lower()
    return out


def test_binder_requirements_match_runtime_and_notebook_extra() -> None:
    project = PYPROJECT["project"]
    wanted = {
        _name(r): r.replace("_", "-").lower()
        for r in list(project["dependencies"]) + project["optional-dependencies"]["notebook"]
    }
    pinned = _requirement_lines(ROOT / "binder" / "requirements.txt")
    assert set(pinned) == set(wanted)
    # Binder pins exact versions (reproducible builds), each inside pyproject's bound.
    from packaging.requirements import Requirement

    for name, line in pinned.items():
        version = line.split("==", 1)[1] if "==" in line else ""
        assert version, f"binder/requirements.txt: {name} is not pinned with =="
        assert Requirement(wanted[name]).specifier.contains(version), (name, version)


def test_binder_runtime_pins_the_supported_python() -> None:
    runtime = (ROOT / "binder" / "runtime.txt").read_text().strip()
    assert re.fullmatch(r"python-3\.\d+", runtime), runtime
    minimum = PYPROJECT["project"]["requires-python"].removeprefix(">=")
    assert tuple(map(int, runtime.removeprefix("python-").split("."))) >= tuple(
        map(int, minimum.split(".")[:2])
    )


def test_binder_postbuild_installs_the_package() -> None:
    post = (ROOT / "binder" / "postBuild").read_text()
    assert "pip install" in post and " -e ." in post


# Dependency direction (DESIGN.md "Layout", docs/internals.md): wire <- models <- market /
# sources <- broker <- server <- notebook / cli. No exemptions: every rule holds for every
# module of its layer (a module is named by its dotted path, so a file that becomes a
# package, e.g. market.py -> market/, keeps its rules).
PACKAGE = ROOT / "quoteflow"


def _module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path, *, everything: bool = False) -> set[str]:
    """Every quoteflow module ``path`` imports (``from quoteflow import data`` counts as
    ``quoteflow.data``), lazy imports inside functions included; with ``everything``,
    third-party modules too."""
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            if node.module == "quoteflow":
                out.update(f"quoteflow.{a.name}" for a in node.names)
    if everything:
        return out
    return {m for m in out if m == "quoteflow" or m.startswith("quoteflow.")}


def _within(module: str, prefix: str) -> bool:
    return module == prefix or module.startswith(prefix + ".")


MODULES = {_module_name(f): _imports(f) for f in sorted(PACKAGE.rglob("*.py"))}

# The command line's entry points (``quoteflow`` and ``python -m quoteflow``) are the cli
# layer; the package's own __init__ is the public facade (lazy re-exports, see
# test_public_api_is_reexported).
CLI = ("quoteflow.cli", "quoteflow.__main__")
TOP = ("quoteflow.notebook", *CLI)


def _in_layer(module: str, layers: tuple[str, ...]) -> bool:
    return any(_within(module, layer) for layer in layers)


def _violations(rule: Callable[[str, str], bool]) -> list[str]:
    return [
        f"{mod} imports {imp}"
        for mod, imps in MODULES.items()
        for imp in sorted(imps)
        if not _within(imp, mod) and rule(mod, imp)
    ]


def test_wire_imports_nothing_from_quoteflow() -> None:
    """The wire format is the bottom layer: everything else may use it."""
    assert any(_within(m, "quoteflow.wire") for m in MODULES)
    bad = _violations(
        lambda mod, imp: _within(mod, "quoteflow.wire") and not _within(imp, "quoteflow.wire")
    )
    assert not bad, "\n".join(bad)


def test_models_import_nothing_but_errors() -> None:
    bad = _violations(
        lambda mod, imp: (
            _within(mod, "quoteflow.models")
            and not _within(imp, "quoteflow.models")
            and imp != "quoteflow.errors"
        )
    )
    assert not bad, "\n".join(bad)


def test_nothing_below_the_server_imports_the_server() -> None:
    top = ("quoteflow.server", *TOP)
    bad = _violations(
        lambda mod, imp: (
            mod != "quoteflow" and not _in_layer(mod, top) and _within(imp, "quoteflow.server")
        )
    )
    assert not bad, "\n".join(bad)


def test_client_imports_only_the_wire_format_and_errors() -> None:
    bad = _violations(
        lambda mod, imp: (
            _within(mod, "quoteflow.client")
            and not _in_layer(imp, ("quoteflow.client", "quoteflow.wire"))
            and imp != "quoteflow.errors"
        )
    )
    assert not bad, "\n".join(bad)


def test_nothing_imports_notebook_or_cli() -> None:
    def rule(mod: str, imp: str) -> bool:
        if _within(imp, "quoteflow.notebook"):
            return not _within(mod, "quoteflow.notebook")
        if _in_layer(imp, CLI):
            return not _in_layer(mod, CLI)
        return False

    bad = _violations(rule)
    assert not bad, "\n".join(bad)


def test_brokers_and_sources_do_not_import_tornado_or_the_layers_above() -> None:
    """Below the server nothing speaks HTTP or draws: the broker carries encoded events."""
    below = (
        "quoteflow.wire",
        "quoteflow.models",
        "quoteflow.broker",
        "quoteflow.market",
        "quoteflow.sources",
        "quoteflow.playback",
        "quoteflow.recording",
        "quoteflow.data",
    )
    bad = [
        f"{_module_name(f)} imports {imp}"
        for f in sorted(PACKAGE.rglob("*.py"))
        if _in_layer(_module_name(f), below)
        for imp in sorted(_imports(f, everything=True))
        if imp.split(".")[0] in ("tornado", "bokeh")
    ]
    assert not bad, "\n".join(bad)


def test_public_api_is_reexported() -> None:
    """``quoteflow.X`` is the object of X's home module, for every name in ``__all__``."""
    import importlib

    import quoteflow

    homes = quoteflow._HOMES
    own = {"ConfigError", "DataError", "ParameterError", "QuoteflowError", "StreamError"}
    assert len(quoteflow.__all__) == len(set(quoteflow.__all__))
    assert set(quoteflow.__all__) == {*homes, *own, "__version__"}
    for name, module in homes.items():
        home = importlib.import_module(module)
        assert getattr(quoteflow, name) is getattr(home, name), name
        assert name in getattr(home, "__all__", [name]), name
    errors = importlib.import_module("quoteflow.errors")
    for name in own:
        assert getattr(quoteflow, name) is getattr(errors, name)
    assert set(quoteflow.__all__) <= set(dir(quoteflow))
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        quoteflow.nope  # noqa: B018


def test_import_quoteflow_stays_light() -> None:
    """The re-exports are lazy: ``import quoteflow`` loads neither tornado nor numpy."""
    import subprocess
    import sys

    code = (
        "import sys, quoteflow; "
        "print(sorted(m for m in ('tornado', 'numpy', 'bokeh') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
