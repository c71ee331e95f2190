"""The house's one direction of imports: bandit <- feedback <- serving.

``bandit`` imports neither of the others; ``feedback`` never imports ``serving``; only
``feedback/tracking.py`` (and what it lazily loads) may import mlflow.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FORBIDDEN = {
    "bandit": {"feedback", "serving", "mlflow", "sqlalchemy", "fastapi", "httpx"},
    "feedback": {"serving", "fastapi"},
}


def imports_of(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module.split(".")[0])
    return out


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_one_way(package: str) -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(imports_of(path) & FORBIDDEN[package])
        for path in (ROOT / package).rglob("*.py")
        if imports_of(path) & FORBIDDEN[package]
    }
    assert offenders == {}


def test_bandit_reads_no_environment() -> None:
    readers = sorted(
        str(path.relative_to(ROOT))
        for path in (ROOT / "bandit").rglob("*.py")
        if any(marker in path.read_text(encoding="utf-8")
               for marker in ("os.environ", "os.getenv", "environ[", "getenv("))
    )
    assert readers == []


def test_only_tracking_imports_mlflow() -> None:
    users = sorted(
        str(path.relative_to(ROOT))
        for package in ("bandit", "feedback", "serving")
        for path in (ROOT / package).rglob("*.py")
        if "mlflow" in imports_of(path)
    )
    assert users == ["feedback/tracking.py"]


@pytest.mark.parametrize("package", ["bandit", "feedback", "serving"])
def test_all_is_sorted_and_complete(package: str) -> None:
    module = __import__(package)
    exported = list(module.__all__)
    assert exported == sorted(exported)
    for name in exported:
        assert hasattr(module, name), f"{package}.__all__ names missing {name!r}"
