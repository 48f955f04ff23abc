"""The package's folders are its stages, and its imports keep to them: checked from the source.

The rules are those each stage's __init__ docstring states. Every `import` counts, at module
level, inside a function or under TYPE_CHECKING: each is a dependency of the design.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "otlp_stats"

# Used by every stage; they import no stage themselves (see TOP_MAY_IMPORT).
SHARED = frozenset({"config", "errors", "clock", "telemetry", "health"})

# What each part may import besides itself, the shared top modules and the generated protos.
# A part is a subpackage, or a module at the top. Anything not named here is refused.
MAY_IMPORT: Mapping[str, frozenset[str]] = {
    # Counts patterns beside distinct messages: the masker and the pattern tallies.
    "counting": frozenset({"patterns"}),
    # Log messages -> patterns: pure, so the scanner, the aggregator and reports can use it.
    "patterns": frozenset(),
    "receiving": frozenset({"counting", "patterns"}),
    "reporting": frozenset({"counting", "patterns"}),
    "store": frozenset({"counting", "reporting", "patterns"}),
    "operating": frozenset({"counting", "reporting", "store", "patterns"}),
    # History from files: the same scanners and reporter, OTLP/JSON and decompression from
    # receiving, the store the windows land in.
    "replaying": frozenset({"counting", "receiving", "reporting", "store", "patterns"}),
    "service": frozenset({"receiving", "counting", "reporting", "store", "operating", "patterns"}),
    # The supervisor and its serving processes: each child runs the service; the parent wires
    # the stages that see the merged windows (reporting, store, operating).
    "processes": frozenset(
        {"service", "receiving", "counting", "reporting", "store", "operating", "patterns"}
    ),
    "cli": frozenset(
        {
            *("service", "processes", "receiving", "counting", "reporting", "store"),
            *("operating", "replaying", "patterns"),
        }
    ),
    "__main__": frozenset({"cli"}),
    "__init__": frozenset(),
    **{name: frozenset() for name in SHARED},
}
# Exceptions at module level, each with its reason.
TOP_MAY_IMPORT: Mapping[str, frozenset[str]] = {
    # --rollups and --retention are parsed with the period grammar that lives with the periods.
    # --report-sink URIs are checked at start by the sinks' own pure parser.
    # --pattern-rules is read and checked at start by the patterns' own rule reader, and
    # Settings builds the one masker the scanners share.
    "config": frozenset(
        {
            *("store.periods", "processes.cores", "reporting.sinks.uri"),
            *("patterns.masker", "patterns.rules", "patterns.tally"),
        }
    ),
    # A serving process applies the same malloc settings and event loop as `serve` does.
    "processes": frozenset({"cli.allocator", "cli.event_loop"}),
}
# The load generator is a tool: it stands alone, and nothing in the service depends on it.
STANDALONE = frozenset({"loadgen"})
ALWAYS_ALLOWED = frozenset({"", "_generated"})  # the package root (__version__), protoc output

PURE = "counting.aggregator"
# What the aggregator, and every module of ours it imports, must not touch: it has no I/O and
# no clock of its own; the worker feeds it and the reporter asks it with the service's time.
IO_MODULES = frozenset(
    {
        *("asyncio", "selectors", "socket", "ssl", "signal", "subprocess", "threading"),
        *("multiprocessing", "concurrent", "os", "io", "sys", "pathlib", "shutil", "tempfile"),
        *("time", "datetime", "logging", "structlog", "prometheus_client"),
        *("grpc", "aiohttp", "http", "urllib", "sqlite3", "redis"),
        *("otlp_stats.clock", "otlp_stats.telemetry"),
    }
)
IO_BUILTINS = frozenset({"open", "print", "input"})

TOP_LEVEL = frozenset(
    {
        "__init__.py",
        "__main__.py",
        "config.py",
        "service.py",
        "errors.py",
        "clock.py",
        "telemetry.py",
        "health.py",
        "py.typed",
        "_generated",
        "cli",
        "receiving",
        "counting",
        "reporting",
        "store",
        "operating",
        "replaying",
        "patterns",
        "processes",
        "loadgen",
    }
)


@dataclass(frozen=True)
class Violation:
    module: str
    imported: str
    rule: str

    def __str__(self) -> str:
        return f"otlp_stats.{self.module} imports {self.imported}: {self.rule}"


def part_of(module: str) -> str:
    """`counting.workers` -> `counting`; `config` -> `config`; the package root -> ``."""
    return module.split(".", 1)[0]


def imported_names(module: str, source: str, is_package: bool, known: Iterable[str]) -> set[str]:
    """Absolute dotted names the module imports; ours relative to otlp_stats, prefixed `otlp_stats`
    only when foreign. `from a import b` names a.b when b is one of our modules, else a."""
    known = set(known)
    package = module if is_package else module.rpartition(".")[0]
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = ["otlp_stats", *filter(None, package.split("."))]
                base_parts = parts[: len(parts) - node.level + 1]
                base = ".".join([*base_parts, *filter(None, [node.module])])
            else:
                base = node.module or ""
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                inner = candidate.removeprefix("otlp_stats.")
                names.add(candidate if inner in known else base)
    return names


def ours(name: str) -> str | None:
    """The name relative to otlp_stats, or None for a foreign module."""
    if name == "otlp_stats":
        return ""
    if name.startswith("otlp_stats."):
        return name.removeprefix("otlp_stats.")
    return None


def check_imports(sources: Mapping[str, str], packages: Iterable[str] = ()) -> list[Violation]:
    """Every import in `sources` (module name relative to otlp_stats -> its source) that breaks
    a rule. `packages` names the modules that are a folder's __init__."""
    packages = set(packages)
    violations: list[Violation] = []
    for module, source in sorted(sources.items()):
        part = part_of(module)
        for name in sorted(imported_names(module, source, module in packages, sources)):
            target = ours(name)
            if target is None:
                continue
            violation = _check_one(module, part, target)
            if violation:
                violations.append(Violation(module, f"otlp_stats.{target}".rstrip("."), violation))
    violations.extend(_check_pure(sources, packages))
    return violations


def _check_one(module: str, part: str, target: str) -> str | None:
    target_part = part_of(target)
    if target_part == part or target_part in ALWAYS_ALLOWED:
        return None
    if part in STANDALONE:
        return f"{part} stands alone; it imports nothing of the service"
    if target_part in STANDALONE:
        return f"{target_part} is a tool; nothing in the service may depend on it"
    if part not in MAY_IMPORT:
        return f"{part} has no rule in tests/test_layout.py; give it one"
    allowed = MAY_IMPORT[part] | (frozenset() if part in SHARED else SHARED)
    if target_part in allowed:
        return None
    if any(target == exc or target.startswith(exc + ".") for exc in TOP_MAY_IMPORT.get(part, ())):
        return None
    may = ", ".join(sorted(allowed | TOP_MAY_IMPORT.get(part, frozenset()))) or "no other part"
    return f"{part} may import only {may}"


def _check_pure(sources: Mapping[str, str], packages: set[str]) -> list[Violation]:
    """The aggregator and every module of ours it reaches: no I/O module, no I/O builtin."""
    if PURE not in sources:
        return []
    violations = []
    seen, todo = set(), [PURE]
    while todo:
        module = todo.pop()
        if module in seen or module not in sources:
            continue
        seen.add(module)
        tree = ast.parse(sources[module])
        for name in imported_names(module, sources[module], module in packages, sources):
            if any(name == io or name.startswith(io + ".") for io in IO_MODULES):
                violations.append(Violation(module, name, f"{PURE} and what it imports do no I/O"))
            target = ours(name)
            if target:
                todo.append(target)
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id in IO_BUILTINS
            ):
                violations.append(
                    Violation(module, f"{node.func.id}()", f"{PURE} and what it imports do no I/O")
                )
    return violations


def check_top_level(names: Iterable[str]) -> list[str]:
    """What the top of otlp_stats holds that it should not, and what it lacks."""
    names = {n for n in names if n != "__pycache__" and not n.endswith(".so")}
    stray = [f"unexpected at the top: {n}" for n in sorted(names - TOP_LEVEL)]
    missing = [f"missing at the top: {n}" for n in sorted(TOP_LEVEL - names - {"_generated"})]
    return stray + missing


def package_sources() -> tuple[dict[str, str], set[str]]:
    sources, packages = {}, set()
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE)
        if relative.parts[0] in ("_generated", "__pycache__"):
            continue
        parts = list(relative.with_suffix("").parts)
        if parts[-1] == "__init__" and len(parts) > 1:
            parts.pop()
            packages.add(".".join(parts))
        sources[".".join(parts)] = path.read_text()
    return sources, packages


# The tree as it is.


def test_the_top_holds_the_entry_points_config_and_service_beside_the_stages() -> None:
    assert check_top_level(p.name for p in PACKAGE.iterdir()) == []


def test_every_module_keeps_to_its_stage() -> None:
    sources, packages = package_sources()
    assert len(sources) > 40, "the checker found too few modules to be looking at the package"
    violations = check_imports(sources, packages)
    assert not violations, "\n".join(map(str, violations))


def test_every_folder_says_what_it_does_and_what_it_may_import() -> None:
    folders = [p for p in PACKAGE.iterdir() if p.is_dir() and p.name in TOP_LEVEL - {"_generated"}]
    assert len(folders) == 10
    for folder in folders:
        docstring = ast.get_docstring(ast.parse((folder / "__init__.py").read_text())) or ""
        assert len(docstring.splitlines()) >= 2, folder.name
        assert "import" in docstring, f"{folder.name}/__init__.py does not state its imports"


# The checker itself: it reports what it should.


@pytest.mark.parametrize(
    ("module", "source", "imported"),
    [
        (
            "counting.workers",
            "from otlp_stats.receiving.intake import Intake",
            "otlp_stats.receiving.intake",
        ),
        ("counting.queue", "import otlp_stats.reporting.reporter", "otlp_stats.reporting.reporter"),
        (
            "counting.scan",
            "def later():\n    from otlp_stats.operating import admin",
            "otlp_stats.operating.admin",
        ),
        (
            "counting.view",
            "from typing import TYPE_CHECKING\n"
            "if TYPE_CHECKING:\n    from otlp_stats.store.base import StateStore",
            "otlp_stats.store.base",
        ),
        ("counting.workers", "from ..receiving import intake", "otlp_stats.receiving.intake"),
        (
            "receiving.intake",
            "from otlp_stats.operating.admin import x",
            "otlp_stats.operating.admin",
        ),
        ("reporting.reporter", "from otlp_stats.store.base import x", "otlp_stats.store.base"),
        ("operating.admin", "from otlp_stats.receiving.tls import x", "otlp_stats.receiving.tls"),
        ("store.sqlite", "from otlp_stats.operating.query import x", "otlp_stats.operating.query"),
        ("service", "from otlp_stats.cli.serve import main", "otlp_stats.cli.serve"),
        ("telemetry", "from otlp_stats.counting.queue import x", "otlp_stats.counting.queue"),
        ("config", "from otlp_stats.store.sqlite import x", "otlp_stats.store.sqlite"),
        ("counting.workers", "from otlp_stats.loadgen import x", "otlp_stats.loadgen"),
        ("loadgen.driver", "from otlp_stats.telemetry import Metrics", "otlp_stats.telemetry"),
        ("helpers", "from otlp_stats.config import Settings", "otlp_stats.config"),
    ],
)
def test_an_import_against_the_stages_is_reported(module: str, source: str, imported: str) -> None:
    sources, packages = package_sources()
    sources[module] = source
    reported = [v for v in check_imports(sources, packages) if v.module == module]
    assert [v.imported for v in reported] == [imported], reported


@pytest.mark.parametrize(
    ("source", "imported"),
    [
        ("import asyncio", "asyncio"),
        ("from time import monotonic", "time"),
        ("from otlp_stats.clock import Clock", "otlp_stats.clock"),
        ("import structlog", "structlog"),
        ("def dump(x):\n    print(x)", "print()"),
    ],
)
def test_io_in_the_aggregator_is_reported(source: str, imported: str) -> None:
    sources, packages = package_sources()
    sources[PURE] += "\n" + source + "\n"
    reported = [v.imported for v in check_imports(sources, packages)]
    # otlp_stats.clock is reported with the asyncio and time it imports in turn.
    assert imported in reported


def test_io_in_a_module_the_aggregator_imports_is_reported() -> None:
    sources, packages = package_sources()
    sources["counting.sketches"] += "\nimport socket\n"
    reported = check_imports(sources, packages)
    assert [(v.module, v.imported) for v in reported] == [("counting.sketches", "socket")]


def test_the_allowed_directions_are_not_reported() -> None:
    sources = {
        "counting.aggregator": "from otlp_stats.counting.sketches import x",
        "counting.sketches": "import datasketches",
        "receiving.intake": "from otlp_stats.counting.queue import x\nimport otlp_stats.errors",
        "store.location": "from otlp_stats.reporting.reporter import x",
        "operating.query": "from otlp_stats.store.base import x",
        "config": "from otlp_stats.store.periods import x",
        "cli.serve": "from otlp_stats.service import Service\nfrom otlp_stats import __version__",
    }
    assert check_imports(sources) == []


def test_a_stray_module_at_the_top_is_reported() -> None:
    listing = [*TOP_LEVEL, "helpers.py", "__pycache__", "_wire.cpython-311-x86_64-linux-gnu.so"]
    assert check_top_level(listing) == ["unexpected at the top: helpers.py"]
    assert check_top_level(TOP_LEVEL - {"operating"}) == ["missing at the top: operating"]


def test_the_tests_mirror_the_stages() -> None:
    """tests/<stage>/ holds the tests of otlp_stats/<stage>/; helpers live in tests/support/."""
    tests = Path(__file__).resolve().parent
    stages = {p.name for p in PACKAGE.iterdir() if p.is_dir() and (p / "__init__.py").exists()}
    folders = {p.name for p in tests.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders - {"support", "fuzz"} <= stages
    assert not [
        p.name for p in tests.glob("*.py") if not p.name.startswith(("test_", "__", "conftest"))
    ]
