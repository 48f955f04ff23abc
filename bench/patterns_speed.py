"""Pattern extraction's cost: CPU nanoseconds per message, C masker against the Python
reference, and the similarity merge over a window's set of patterns.

The messages are the four shared Loghub-2k systems' (8,000 lines, 40 to 200 bytes), masked
through the Python entry point (`Masker.mask`: str in, str out), so the C figure includes the
encode and decode a Python caller pays; inside the C scanner's pass the cost is below it.
CPU time of this process (time.process_time), rounds interleaved so that a busy neighbour
slows both sides alike; the median round is reported. drain3 (its defaults, a fresh miner each
round) is measured beside when it is installed, and the C rules alone (no Python call, as the
wire scanner would call them) when a C compiler is there: bench/patterns_native.c.

    python -m bench.patterns_speed [--rounds 7]
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from bench.patterns_accuracy import (
    SYSTEMS,
    default_data,
    drain3_templates,
    have_drain3,
    read_system,
)
from otlp_stats.patterns import masker
from otlp_stats.patterns.masker import DEFAULT_MAX_LENGTH, DEFAULT_MAX_TOKENS, Masker
from otlp_stats.patterns.merge import merge_patterns

ROOT = Path(__file__).resolve().parents[1]
NATIVE = ROOT / "bench" / "patterns_native.c"


def native_ns_per_message(messages: Sequence[str]) -> float | None:
    """The C rules without Python (bench/patterns_native.c), or None without a C compiler."""
    compiler = shutil.which("cc") or shutil.which("gcc")
    if compiler is None:
        return None
    with tempfile.TemporaryDirectory() as directory:
        binary = Path(directory) / "patterns_native"
        include = ROOT / "otlp_stats" / "patterns"
        build = [compiler, "-O2", "-std=c11", f"-I{include}", str(NATIVE), "-o", str(binary)]
        subprocess.run(build, check=True)
        lines = "".join(m.replace("\n", " ") + "\n" for m in messages).encode()
        result = subprocess.run([str(binary)], input=lines, capture_output=True, check=True)
    return float(result.stdout.split()[0])


def cpu_ns_per_item(work: Callable[[], object], items: int) -> float:
    started = time.process_time_ns()
    work()
    return (time.process_time_ns() - started) / items


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args(argv)
    messages = [m for s in SYSTEMS for m in read_system(default_data(), s)[0]]
    patterns = sorted({Masker().mask(m) for m in messages})

    def python_mask() -> list[str]:
        return [
            masker.mask_builtin_python(m, DEFAULT_MAX_TOKENS, DEFAULT_MAX_LENGTH) for m in messages
        ]

    def c_mask() -> list[str]:
        return [masker.mask_builtin(m, DEFAULT_MAX_TOKENS, DEFAULT_MAX_LENGTH) for m in messages]

    encoded = [m.encode() for m in messages]

    def c_bytes() -> list[bytes]:
        assert masker.c_mask is not None
        return [masker.c_mask(m, DEFAULT_MAX_TOKENS, DEFAULT_MAX_LENGTH) for m in encoded]

    empty = [b""] * len(messages)

    def c_call() -> list[bytes]:
        assert masker.c_mask is not None
        return [masker.c_mask(m, DEFAULT_MAX_TOKENS, DEFAULT_MAX_LENGTH) for m in empty]

    def merge() -> dict[str, str]:
        return merge_patterns(patterns)

    sides: dict[str, tuple[Callable[[], object], int]] = {"python": (python_mask, len(messages))}
    if masker.HAVE_C_MASKER:
        sides["c"] = (c_mask, len(messages))
        sides["c_bytes"] = (c_bytes, len(messages))
        sides["c_call"] = (c_call, len(messages))
    if have_drain3():

        def drain3() -> object:
            return drain3_templates(messages)

        sides["drain3"] = (drain3, len(messages))
    sides["merge"] = (merge, len(patterns))
    rounds: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, (work, items) in sides.items():
            rounds[name].append(cpu_ns_per_item(work, items))
    median = {name: statistics.median(values) for name, values in rounds.items()}
    native = native_ns_per_message(messages)
    print(f"{len(messages)} messages, {len(patterns)} distinct masked patterns, ", end="")
    print(f"{args.rounds} rounds")
    print("| step | CPU ns per item |")
    print("|---|---:|")
    print(f"| mask, Python reference | {median['python']:,.0f} |")
    if "c" in median:
        print(f"| mask, C (_masker.c) | {median['c']:,.0f} |")
        print(f"| mask, C from Python, on bytes | {median['c_bytes']:,.0f} |")
        print(f"| of which the Python call (an empty message) | {median['c_call']:,.0f} |")
    if native is not None:
        print(f"| mask, C without Python (bench/patterns_native.c) | {native:,.0f} |")
        print(f"| C speed-up (str in, str out) | {median['python'] / median['c']:.1f}x |")
    print(f"| merge, per pattern of the set | {median['merge']:,.0f} |")
    if "drain3" in median:
        print(f"| drain3 with its defaults, per message | {median['drain3']:,.0f} |")
        if "c_bytes" in median:
            ratio = median["drain3"] / median["c_bytes"]
            print(f"| C masker's messages per second / drain3's, from Python | {ratio:.0f}x |")
        if native is not None:
            ratio = median["drain3"] / native
            print(f"| C masker's messages per second / drain3's, without Python | {ratio:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
