"""The declared dependencies tell the truth: every floor in pyproject.toml admits the version
requirements.txt pins (what CI installs and tests), the security floors hold, and every
third-party module the package, the scripts and the tests import is declared in
pyproject.toml (as a dependency or in an extra)."""

import ast
import sys
import tomllib
from importlib.metadata import packages_distributions
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from conftest import ROOT

# Floors below which a known vulnerability is admitted.
SECURITY_FLOORS = {"torch": "2.6",  # CVE-2025-32434: torch.load(weights_only=True) bypassed before 2.6
                   "pillow": "10.3"}  # CVE-2023-4863 (its bundled libwebp), CVE-2024-28219
# Declared but not installable here (no GPU, no TensorRT): not pinned in requirements.txt.
NOT_PINNED = {"onnxruntime-gpu", "tensorrt"}
# Tools CI runs that the package never imports.
TOOLS = {"ruff", "import-linter", "pytest"}


def _declared() -> dict[str, list[Requirement]]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    requirements = [Requirement(r) for r in project["dependencies"]]
    requirements += [Requirement(r) for extra in project["optional-dependencies"].values() for r in extra]
    declared: dict[str, list[Requirement]] = {}
    for requirement in requirements:
        declared.setdefault(canonicalize_name(requirement.name), []).append(requirement)
    return declared


def _pins() -> dict[str, Version]:
    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            requirement = Requirement(line)
            (spec,) = requirement.specifier
            assert spec.operator == "==", f"requirements.txt must pin exactly: {line}"
            pins[canonicalize_name(requirement.name)] = Version(spec.version)
    return pins


def test_every_floor_admits_the_pinned_version_and_every_dependency_is_pinned():
    declared, pins = _declared(), _pins()
    for name, requirements in declared.items():
        if name in NOT_PINNED:
            continue
        assert name in pins, f"{name} is declared in pyproject.toml but not pinned in requirements.txt (CI lacks it)"
        for requirement in requirements:
            assert requirement.specifier.contains(pins[name], prereleases=True), \
                f"pyproject.toml's {requirement} does not admit the pinned {name}=={pins[name]}"


@pytest.mark.parametrize("name,floor", sorted(SECURITY_FLOORS.items()))
def test_security_floors(name, floor):
    for requirement in _declared()[name]:
        lowest = [Version(s.version) for s in requirement.specifier if s.operator in (">=", "==", "~=")]
        assert lowest and min(lowest) >= Version(floor), f"{requirement} admits versions below {floor}"


def _imported_modules(folder: Path) -> set[str]:
    modules = set()
    for file in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(file.read_text(), str(file))):
            if isinstance(node, ast.Import):
                modules |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                modules.add(node.module.split(".")[0])
    return modules


def test_every_imported_third_party_module_is_declared():
    local = {"egsde_rt", "conftest", "helpers", *(p.stem for p in (ROOT / "tests").rglob("*.py"))}
    distributions = packages_distributions()
    declared = set(_declared())
    undeclared = []
    for folder in ("python/egsde_rt", "scripts", "tests"):
        for module in sorted(_imported_modules(ROOT / folder) - set(sys.stdlib_module_names) - local):
            # a module this environment does not have (tensorrt) is named after its distribution
            names = {canonicalize_name(d) for d in distributions.get(module, [module])}
            if not names & declared:
                undeclared.append(f"{folder}: {module} (distribution {sorted(names)})")
    assert not undeclared, f"imported but not declared in pyproject.toml: {undeclared}"
    assert TOOLS <= declared
