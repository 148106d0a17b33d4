"""Boundaries that keep the architecture readable: enforced, not just documented."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

from tests.no_prefect import BLOCK_PREFECT

REPO = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def _py_files(package: str) -> list[Path]:
    return sorted((REPO / package).rglob("*.py"))


def test_library_packages_never_import_flows_or_prefect():
    # tasks/, schemas/ and storage/ must run where Prefect is absent (the GPU image) and must not
    # depend on the orchestration layer.
    offenders = []
    for package in ("tasks", "schemas", "storage"):
        for path in _py_files(package):
            bad = _imports(path) & {"flows", "prefect"}
            if bad:
                offenders.append(f"{path.relative_to(REPO)} imports {sorted(bad)}")
    assert not offenders, "\n".join(offenders)


def test_storage_and_schemas_do_not_import_tasks():
    offenders = [
        str(p.relative_to(REPO)) for pkg in ("schemas", "storage") for p in _py_files(pkg) if "tasks" in _imports(p)
    ]
    assert not offenders, offenders


def test_importing_the_package_never_imports_vllm():
    code = (
        "import sys, schemas, storage, tasks, flows.cli\n"
        "import importlib, pkgutil\n"
        "for pkg in ('tasks',):\n"
        "    m = importlib.import_module(pkg)\n"
        "    for info in pkgutil.walk_packages(m.__path__, pkg + '.'):\n"
        "        importlib.import_module(info.name)\n"
        "assert 'vllm' not in sys.modules, 'vllm imported'\n"
        "assert 'prefect' not in sys.modules or True\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]


def test_training_code_imports_without_prefect():
    # Simulate the GPU image: Prefect is not installed there.
    code = (
        BLOCK_PREFECT +
        "import importlib, pkgutil, tasks\n"
        "for info in pkgutil.walk_packages(tasks.__path__, 'tasks.'):\n"
        "    importlib.import_module(info.name)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
