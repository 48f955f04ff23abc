"""requirements.lock against pyproject.toml: every runtime dependency pinned within its range,
with hashes, and nothing pinned that the runtime dependencies no longer need. `make lock`
re-pins; the image and `make install` install the lock with --require-hashes."""

from __future__ import annotations

import ast
import re
import tomllib
from dataclasses import dataclass
from importlib import metadata

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

from tests.support.servicetools import REPO

LOCK = REPO / "requirements.lock"


@dataclass(frozen=True)
class Pin:
    requirement: Requirement
    hashes: tuple[str, ...]

    @property
    def name(self) -> str:
        return canonicalize_name(self.requirement.name)

    @property
    def version(self) -> Version:
        [specifier] = self.requirement.specifier
        assert specifier.operator == "==", self.requirement
        return Version(specifier.version)


def locked() -> list[Pin]:
    """One Pin per `name==version [; marker]` entry, with the hashes listed under it."""
    entries = re.sub(r"\\\n\s*", " ", LOCK.read_text())
    pins = []
    for line in entries.splitlines():
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        requirement, *hashes = (part.strip() for part in line.split("--hash="))
        pins.append(Pin(Requirement(requirement), tuple(hashes)))
    return pins


def runtime_dependencies() -> list[Requirement]:
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    return [Requirement(text) for text in project["dependencies"]]


def test_every_pin_is_exact_and_hashed() -> None:
    for pin in locked():
        assert pin.version, pin
        assert pin.hashes and all(h.startswith("sha256:") for h in pin.hashes), pin.name


def test_every_runtime_dependency_is_pinned_within_its_range() -> None:
    pins = locked()
    for dependency in runtime_dependencies():
        name = canonicalize_name(dependency.name)
        versions = [pin.version for pin in pins if pin.name == name]
        assert versions, f"{name} is in pyproject.toml but not in requirements.lock: make lock"
        for version in versions:
            assert dependency.specifier.contains(version, prereleases=True), (
                f"requirements.lock pins {name}=={version}, outside pyproject.toml's "
                f"{dependency.specifier}: make lock"
            )


def needed_by(requirements: list[Requirement]) -> set[str]:
    """Every distribution these requirements pull in on this interpreter, from the installed
    metadata (the virtual environment is installed from the lock)."""
    environment = {key: str(value) for key, value in default_environment().items()}
    needed: set[str] = set()
    pending = [(requirement, "") for requirement in requirements]
    while pending:
        requirement, extra = pending.pop()
        if requirement.marker and not requirement.marker.evaluate({**environment, "extra": extra}):
            continue
        name = canonicalize_name(requirement.name)
        extras = sorted(requirement.extras)
        if name in needed and not extras:
            continue
        needed.add(name)
        for wanted in ["", *extras]:
            pending += [(Requirement(r), wanted) for r in metadata.requires(name) or []]
    return needed


def test_nothing_is_pinned_that_the_runtime_dependencies_do_not_need() -> None:
    applicable = {
        pin.name
        for pin in locked()
        if pin.requirement.marker is None or pin.requirement.marker.evaluate()
    }
    stale = applicable - needed_by(runtime_dependencies())
    assert not stale, f"requirements.lock pins what nothing needs any more: {stale}: make lock"


def test_the_locked_protobuf_runs_the_modules_the_pinned_grpcio_tools_generates() -> None:
    """protoc's generated modules refuse an older protobuf runtime, or another major version:
    pyproject.toml's floor is the generated code's version, and the lock lies above it."""
    [generated] = (REPO / "otlp_stats" / "_generated").rglob("*_pb2.py")
    call = next(
        node
        for node in ast.walk(ast.parse(generated.read_text()))
        if isinstance(node, ast.Call)
        and getattr(node.func, "attr", "") == "ValidateProtobufRuntimeVersion"
    )
    major, minor, patch = (ast.literal_eval(arg) for arg in call.args[1:4])
    gencode = Version(f"{major}.{minor}.{patch}")
    [protobuf] = [d for d in runtime_dependencies() if d.name == "protobuf"]
    assert f">={gencode}" in {str(s) for s in protobuf.specifier}
    [pin] = [pin for pin in locked() if pin.name == "protobuf"]
    assert gencode <= pin.version and pin.version.major == gencode.major
