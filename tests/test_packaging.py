"""What a user installs: the optional extras and the one place the version is written."""

import tomllib
from pathlib import Path

import pytest

import melanoma
from melanoma import errors

PYPROJECT = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())


def test_a_missing_extra_is_named_with_its_pip_command(monkeypatch):
    """`melanoma serve` without the app extra (and the like): one line naming what to install."""
    import importlib.util

    from melanoma import errors

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "streamlit" else real(name, *a))
    with pytest.raises(errors.UsageError, match=r"melanoma serve needs the app extra \(streamlit not installed\): pip install 'melanoma\[app\]'"):
        errors.require_extra("app", "melanoma serve")
    errors.require_extra("train", "melanoma export")  # installed here: no error


def test_the_extras_the_code_checks_are_the_ones_pyproject_declares():
    extras = PYPROJECT["project"]["optional-dependencies"]
    for extra, modules in errors.EXTRAS.items():
        assert len(extras[extra]) == len(modules), extra  # one importable module per declared package
    assert set(errors.EXTRAS) <= set(extras) and "melanoma[app,api,train]" in extras["dev"]


def test_the_version_is_written_once():
    assert "version" not in PYPROJECT["project"] and PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "melanoma.__version__"}
    assert melanoma.__version__


def package_imports() -> dict[str, set[str]]:
    """Each module of the package -> the package modules it imports, at the top, inside a function or
    under `if TYPE_CHECKING:` (a cycle that only type checkers see is still a cycle in the design)."""
    import ast

    src = Path(melanoma.__file__).parent
    modules = {p.stem for p in src.glob("*.py")}
    edges = {}
    for path in src.glob("*.py"):
        tree = ast.parse(path.read_text())
        names = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                names |= {node.module.split(".")[0]} if node.module else {a.name for a in node.names}
        edges[path.stem] = names & modules
    return edges


def test_no_module_imports_itself_through_others():
    """No import cycle, hidden inside functions or not: each module can be read without the ones that use it."""
    import graphlib

    try:
        list(graphlib.TopologicalSorter(package_imports()).static_order())
    except graphlib.CycleError as exc:
        pytest.fail(f"import cycle: {' -> '.join(exc.args[1])}")


def test_a_module_over_300_lines_says_why():
    """Small modules named for what they hold: a longer one states its reason in its docstring."""
    import ast
    import re

    for path in sorted(Path(melanoma.__file__).parent.glob("*.py")):
        text = path.read_text()
        if text.count("\n") > 300:
            doc = ast.get_docstring(ast.parse(text)) or ""
            assert re.search(r"over 300 lines|about \d+\s+lines", doc, re.IGNORECASE), f"{path.name}: {text.count(chr(10))} lines, no reason stated"
