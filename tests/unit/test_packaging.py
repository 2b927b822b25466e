"""The package's declared dependencies, environment files and public API stay in step."""

from __future__ import annotations

import ast
import re
import tomllib
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


# Dependency direction (DESIGN.md "Layout"): models <- market/sources <- broker <- server;
# client depends on nothing but errors; nothing imports notebook or cli.
FORBIDDEN = {
    "quoteflow/models": (
        "quoteflow.market",
        "quoteflow.sources",
        "quoteflow.broker",
        "quoteflow.server",
        "quoteflow.client",
        "quoteflow.notebook",
        "quoteflow.cli",
        "quoteflow.data",
        "tornado",
        "bokeh",
    ),
    "quoteflow/market.py": (
        "quoteflow.broker",
        "quoteflow.server",
        "quoteflow.notebook",
        "quoteflow.cli",
    ),
    "quoteflow/sources.py": (
        "quoteflow.broker",
        "quoteflow.server",
        "quoteflow.notebook",
        "quoteflow.cli",
    ),
    "quoteflow/broker": ("quoteflow.server", "quoteflow.notebook", "quoteflow.cli"),
    "quoteflow/server": ("quoteflow.notebook", "quoteflow.cli"),
    "quoteflow/client.py": (
        "quoteflow.models",
        "quoteflow.market",
        "quoteflow.sources",
        "quoteflow.broker",
        "quoteflow.server",
        "quoteflow.notebook",
        "quoteflow.cli",
    ),
    "quoteflow/data": (
        "quoteflow.market",
        "quoteflow.broker",
        "quoteflow.server",
        "quoteflow.notebook",
        "quoteflow.cli",
    ),
}


# The one allowed upward reference: the broker encodes each event once with the pure,
# stdlib-only SSE encoder (quoteflow.server.sse, "SSE encoding in one place"), which
# imports nothing from the server layer (tests/unit/test_sse_encoding.py checks that).
ALLOWED = {"quoteflow/broker": ("quoteflow.server.sse",)}


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
    return out


@pytest.mark.parametrize("where", sorted(FORBIDDEN))
def test_dependency_direction(where: str) -> None:
    base = ROOT / where
    files = [base] if base.suffix == ".py" else sorted(base.rglob("*.py"))
    bad = []
    for f in files:
        if not f.exists():
            continue
        for mod in _imports(f):
            if mod in ALLOWED.get(where, ()):
                continue
            if any(mod == p or mod.startswith(p + ".") for p in FORBIDDEN[where]):
                bad.append(f"{f.relative_to(ROOT)} imports {mod}")
    assert not bad, "\n".join(bad)
