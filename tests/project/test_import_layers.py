"""The layer contracts of pyproject.toml ([tool.importlinter]) hold, and a violation breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ROOT

METHOD = "method: choices, then settings and solvers, then schedule"  # the contract inside egsde_rt.method
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
pytestmark = pytest.mark.skipif(not LINT_IMPORTS.exists(), reason="import-linter is not installed")


def _lint(package_parent: Path) -> subprocess.CompletedProcess:
    """Run lint-imports with the project's contracts on the egsde_rt package found in package_parent."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    return subprocess.run([str(LINT_IMPORTS), "--config", str(ROOT / "pyproject.toml"), "--no-cache"],
                          cwd=package_parent, env=env, capture_output=True, text=True, timeout=120)


def test_the_contracts_hold():
    result = _lint(ROOT / "python")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "4 kept, 0 broken" in result.stdout


@pytest.mark.parametrize("module,violation,contract", [
    ("runtime/backends.py", "from ..reference import translate", "Nothing on the engine path imports the eager oracle"),
    ("export/__init__.py", "from ..runtime import translator", "export and runtime do not import each other"),
    ("method/schedule.py", "from ..models import DSE", "Layers: each package imports only the packages below it"),
    ("models/dse.py", "from ..engine import SCORE", "Layers: each package imports only the packages below it"),
    ("jobs/folders.py", "from ..service import deployment", "Layers: each package imports only the packages below it"),
    # the cycle settings <-> schedule <-> solvers, and its type-checking back-edge, stay broken
    ("method/settings.py", "from .solvers import SOLVERS", METHOD),
    ("method/solvers.py", "from .schedule import Schedule", METHOD),
    ("method/solvers.py", "import typing\nif typing.TYPE_CHECKING:\n    from .schedule import Schedule", METHOD),
])
def test_a_violation_breaks_a_contract(tmp_path, module, violation, contract):
    shutil.copytree(ROOT / "python" / "egsde_rt", tmp_path / "egsde_rt",
                    ignore=shutil.ignore_patterns("*.so", "__pycache__", "weights"))
    path = tmp_path / "egsde_rt" / module
    path.write_text(path.read_text() + f"\n{violation}  # a deliberate violation\n")
    result = _lint(tmp_path)
    assert result.returncode != 0
    broken = result.stdout.split("Broken contracts", 1)[-1]
    assert contract in broken, result.stdout
