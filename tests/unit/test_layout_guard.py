"""What ships is what `services/` and `shared/` hold: the wheel (`pyproject.toml`) and the service
image (`deploy/Dockerfile`) package those two folders only. These tests keep simulators, the dev
stack, the demo and test tooling from creeping back into them."""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SERVICES = {"cart", "orders", "payments", "provisioning"}
# Packages that exist for development and tests only; nothing shipped may import them.
NOT_SHIPPED = ("simulators", "devstack", "demo", "tests", "chaos", "bench", "testcontainers")


def _shipped_modules() -> list[Path]:
    return sorted(
        p for top in ("services", "shared") for p in (ROOT / top).rglob("*.py")
        if "migrations/versions" not in p.as_posix()
    )  # fmt: skip


def test_services_holds_exactly_the_four_services() -> None:
    entries = {p.name for p in (ROOT / "services").iterdir() if p.name != "__pycache__"}
    assert entries == SERVICES


def test_the_wheel_packages_only_shared_and_services() -> None:
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert pyproject["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"] == [
        "shared",
        "services",
    ]


def test_the_service_image_copies_only_shared_and_services() -> None:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    runtime_stage = dockerfile.split("AS runtime", 1)[1]
    build_stage = dockerfile.split("AS build", 1)[1].split("FROM ", 1)[0]
    copied = {
        line.split()[1]
        for line in build_stage.splitlines() + runtime_stage.splitlines()
        if line.startswith("COPY ") and "--from" not in line
    }
    assert copied == {"pyproject.toml", "shared", "services"}


def test_nothing_shipped_imports_a_simulator_the_dev_stack_or_test_tooling() -> None:
    offenders: list[str] = []
    modules = _shipped_modules()
    assert len(modules) > 50, "the scan found too few modules to mean anything"
    for path in modules:
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}: {name}"
                for name in names
                if name.split(".")[0] in NOT_SHIPPED
            ]
    assert offenders == []
