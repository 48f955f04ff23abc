"""Build steps pyproject.toml cannot express: the .proto views and the C wire scanner.

The project's own .proto views (proto/) are compiled into otlp_stats/_generated; the generated
modules are not committed: they come from the .proto files with the grpcio-tools version pinned
in [build-system]. otlp_stats/counting/_wire.c is the per-record counting work in C; it needs a C
compiler and xxhash.h (Debian's libxxhash-dev; `make install` installs it). The extension is
optional: where it cannot be built, the package still installs and counts through the
pure-Python view (otlp_stats/counting/scan.py), only slower.
"""

from __future__ import annotations

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
PROTO_ROOT = ROOT / "proto"
OUTPUT = ROOT / "otlp_stats" / "_generated"


def compile_protos() -> None:
    from grpc_tools import protoc

    OUTPUT.mkdir(exist_ok=True)
    (OUTPUT / "__init__.py").write_text('"""Modules generated from proto/ by setup.py."""\n')
    for proto in sorted(PROTO_ROOT.rglob("*.proto")):
        relative = proto.relative_to(PROTO_ROOT)
        status = protoc.main(
            [
                "grpc_tools.protoc",
                f"-I{PROTO_ROOT}",
                f"--python_out={OUTPUT}",
                f"--pyi_out={OUTPUT}",
                str(relative),
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {relative}")
    # protoc mirrors the proto's folder; make each folder an importable package.
    for folder in OUTPUT.rglob("*"):
        if folder.is_dir() and not (folder / "__init__.py").exists():
            (folder / "__init__.py").write_text("")


class BuildPyWithProtos(build_py):
    def finalize_options(self) -> None:
        # Compile before build_py takes its package list from the distribution: the packages
        # were found when _generated did not exist yet, so a clean build would leave it out.
        compile_protos()
        packages = self.distribution.packages or []
        for init in sorted(OUTPUT.rglob("__init__.py")):
            name = ".".join(init.parent.relative_to(ROOT).parts)
            if name not in packages:
                packages.append(name)
        self.distribution.packages = packages
        super().finalize_options()


WIRE_SCANNER = Extension(
    "otlp_stats.counting._wire",
    sources=["otlp_stats/counting/_wire.c"],
    # The masker's rules, masked in the scanner's pass (patterns/masker_core.h).
    depends=["otlp_stats/patterns/masker_core.h"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
    optional=True,
)

# OTLP/JSON into OTLP protobuf in one pass (receiving/otlp_json.py falls back to json_format
# where it is not built); plain C, no library.
JSON_TRANSCODER = Extension(
    "otlp_stats.receiving._otlp_json",
    sources=["otlp_stats/receiving/_otlp_json.c"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
    optional=True,
)

# The masker's built-in rules (patterns/masker.py falls back to its Python reference where it is
# not built); plain C, no library.
PATTERN_MASKER = Extension(
    "otlp_stats.patterns._masker",
    sources=["otlp_stats/patterns/_masker.c"],
    depends=["otlp_stats/patterns/masker_core.h"],
    extra_compile_args=["-O2", "-std=c11", "-Wall", "-Wextra", "-Werror=implicit-function-declaration"],
    optional=True,
)

setup(
    cmdclass={"build_py": BuildPyWithProtos},
    ext_modules=[WIRE_SCANNER, JSON_TRANSCODER, PATTERN_MASKER],
)
