"""Issue 18: the CPU per record of counting several attribute keys against one, in-process.

One key is the service's path today: the C scanner's check and tally, then the aggregator. Three
keys are one check (one walk over the bytes, every key resolved in it), a tally per key from
what it noted, and an aggregator per key. The two alternate round by round in this one process,
so a slow spell on this shared machine falls on both, and the ratio is the median round's.

    python -m bench.keys [--cpu-seconds 6]

CPU time on this shared machine moves by tens of percent between runs; instructions do not.
`--only one|several --passes N` runs that side's pass N times, untimed, for callgrind: a
record's instructions are (passes 3 - passes 0) / (3 x the workload's 32,000 records).

    PYTHONHASHSEED=0 OPENBLAS_NUM_THREADS=1 valgrind --tool=callgrind \
        python -m bench.keys --only several --passes 3

`--patterns on` counts each value's message patterns too (a default Masker, as the service
does by default); off, the default here, the scanners count no pattern.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from otlp_stats.counting.aggregator import Aggregator
from otlp_stats.counting.resolve import LabelRenderer
from otlp_stats.counting.scan import NATIVE_AVAILABLE, NativeScanner, Scanner, ViewScanner
from otlp_stats.loadgen import PreparedRequest
from otlp_stats.loadgen.workload import Workload, build_requests
from otlp_stats.patterns.masker import Masker

# Beside the workload's key (service.name), two of its records' other attributes with few
# values, as a namespace or a severity would have.
EXTRA_KEYS = ("http.request.method", "code.function")
LIMIT = 1.3
_ROUNDS = 7
# One window for the whole measurement: the aggregator's per-window work, not its closing.
_WINDOW_SECONDS = 1e9


@dataclass(frozen=True)
class KeysCost:
    keys: tuple[str, ...]
    scanner: str
    one_us: float  # CPU µs per record, one key, median round
    several_us: float
    ratios: tuple[float, ...]  # several / one, round by round

    @property
    def ratio(self) -> float:
        return statistics.median(self.ratios)


def _scanner(keys: tuple[str, ...], masker: Masker | None) -> Scanner:
    if NATIVE_AVAILABLE:
        return NativeScanner(keys, masker=masker)
    return ViewScanner(keys, masker=masker)


def _one_key_pass(
    requests: Sequence[PreparedRequest], key: str, masker: Masker | None = None
) -> Callable[[], None]:
    scanner = _scanner((key,), masker)
    labels = LabelRenderer()
    # Made once: every pass adds to the same window, as a live window takes request after
    # request (a new one per pass measured a window's first seconds, every hash a new entry).
    aggregator = Aggregator(_WINDOW_SECONDS, 0.0)

    def one_pass() -> None:
        for request in requests:
            aggregator.add(1.0, scanner.tally(scanner.check(request.payload), labels))

    return one_pass


def _several_keys_pass(
    requests: Sequence[PreparedRequest], keys: tuple[str, ...], masker: Masker | None = None
) -> Callable[[], None]:
    scanner = _scanner(keys, masker)
    labels = LabelRenderer()
    aggregators = [Aggregator(_WINDOW_SECONDS, 0.0) for _ in keys]

    def one_pass() -> None:
        for request in requests:
            tallies = scanner.tally_keys(scanner.check(request.payload), labels)
            for aggregator, tally in zip(aggregators, tallies, strict=True):
                aggregator.add(1.0, tally)

    return one_pass


def _cpu_per_pass(one_pass: Callable[[], None], seconds: float) -> float:
    passes = 0
    started = time.process_time()
    while (spent := time.process_time() - started) < seconds:
        one_pass()
        passes += 1
    return spent / passes


def measure_keys(
    requests: Sequence[PreparedRequest],
    key: str,
    cpu_seconds: float,
    masker: Masker | None = None,
) -> KeysCost:
    """`key` alone against `key` and EXTRA_KEYS, interleaved, `cpu_seconds` in all; with
    `masker`, patterns counted on both sides."""
    keys = (key, *EXTRA_KEYS)
    one = _one_key_pass(requests, key, masker)
    several = _several_keys_pass(requests, keys, masker)
    one()  # warm caches and label renderings outside the clock
    several()
    records = sum(request.records for request in requests)
    per_round = cpu_seconds / _ROUNDS / 2
    ones, severals = [], []
    for _ in range(_ROUNDS):
        ones.append(_cpu_per_pass(one, per_round) / records * 1e6)
        severals.append(_cpu_per_pass(several, per_round) / records * 1e6)
    return KeysCost(
        keys,
        "native" if NATIVE_AVAILABLE else "python",
        statistics.median(ones),
        statistics.median(severals),
        tuple(s / o for s, o in zip(severals, ones, strict=True)),
    )


def run_passes(
    requests: Sequence[PreparedRequest],
    key: str,
    several: bool,
    passes: int,
    masker: Masker | None = None,
) -> None:
    """One side's pass, once to warm up as measure_keys does, then `passes` times more."""
    one_pass = (
        _several_keys_pass(requests, (key, *EXTRA_KEYS), masker)
        if several
        else _one_key_pass(requests, key, masker)
    )
    for _ in range(passes + 1):
        one_pass()


def describe(cost: KeysCost, patterns: bool = False) -> str:
    verdict = "within" if cost.ratio <= LIMIT else "OVER"
    counted = "patterns counted (the default)" if patterns else "patterns not counted"
    return (
        f"{len(cost.keys)} keys ({', '.join(cost.keys)}) from one walk, {counted}, "
        f"{cost.scanner} scanner + aggregator per key: {cost.several_us:.2f} CPU µs/record against "
        f"{cost.one_us:.2f} for one key: {cost.ratio:.2f}x (median of {len(cost.ratios)} "
        f"interleaved rounds, {min(cost.ratios):.2f}-{max(cost.ratios):.2f}), {verdict} the "
        f"{LIMIT}x limit"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cpu-seconds", type=float, default=6.0, help="CPU seconds in all")
    parser.add_argument("--only", choices=("one", "several"), help="run one side, untimed")
    parser.add_argument("--passes", type=int, default=3, help="with --only: passes to run")
    parser.add_argument(
        "--patterns", choices=("on", "off"), default="off", help="count message patterns too"
    )
    args = parser.parse_args(argv)
    masker = Masker() if args.patterns == "on" else None
    workload = Workload()
    requests = build_requests(workload)
    if args.only is not None:
        run_passes(requests, workload.attribute_key, args.only == "several", args.passes, masker)
        return 0
    cost = measure_keys(requests, workload.attribute_key, args.cpu_seconds, masker)
    print(describe(cost, masker is not None))
    return 0 if cost.ratio <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
