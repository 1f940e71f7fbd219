"""What the package ships and what CI checks: py.typed, every package listed, the gates
(ruff check, ruff format --check, mypy) before the README's test command, and the public
names each package re-exports."""

from __future__ import annotations

import importlib
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
# A directory of modules without __init__.py still imports from the source tree (a
# namespace package) but is left out of the wheel: count every directory holding a module.
PACKAGES = sorted(
    {
        ".".join(module.parent.relative_to(ROOT).parts)
        for module in (ROOT / "zkserver").rglob("*.py")
        if "__pycache__" not in module.parts
    }
)


def test_py_typed_ships_with_the_package() -> None:
    assert (ROOT / "zkserver" / "py.typed").is_file()
    assert "py.typed" in PYPROJECT["tool"]["setuptools"]["package-data"]["zkserver"]


def test_every_module_directory_is_a_regular_package() -> None:
    missing = [
        name for name in PACKAGES if not (ROOT / name.replace(".", "/") / "__init__.py").is_file()
    ]
    assert not missing, missing


def test_every_package_is_listed_for_setuptools() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    assert set(PACKAGES) <= listed, sorted(set(PACKAGES) - listed)


def test_type_checking_is_configured_with_the_zope_plugin() -> None:
    mypy = PYPROJECT["tool"]["mypy"]
    assert "mypy_zope:plugin" in mypy["plugins"]
    assert mypy["disallow_untyped_defs"] is True
    test_extra = " ".join(PYPROJECT["project"]["optional-dependencies"]["test"])
    assert "mypy" in test_extra and "mypy-zope" in test_extra


def test_ci_runs_lint_format_and_types_before_the_readme_test_command() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    command = (
        "python3 -m venv .venv && .venv/bin/pip install '.[test]' && .venv/bin/python -m pytest"
    )
    assert command in readme
    script = (ROOT / ".ci" / "run").read_text(encoding="utf-8")
    lines = [line.strip() for line in script.splitlines()]
    gates = [
        ".venv/bin/ruff check zkserver tests bench",
        ".venv/bin/ruff format --check zkserver tests bench",
        ".venv/bin/mypy zkserver",
    ]
    positions = [lines.index(gate) for gate in gates]
    assert positions == sorted(positions) and positions[-1] < lines.index(command)


@pytest.mark.parametrize("name", [p for p in PACKAGES if p != "zkserver.store.migrations"])
def test_each_package_re_exports_its_public_names(name: str) -> None:
    module = importlib.import_module(name)
    names = getattr(module, "__all__", None)
    assert names, f"{name} has no __all__"
    missing = [n for n in names if not hasattr(module, n)]
    assert not missing, missing
