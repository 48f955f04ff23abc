"""Issue 20: the CPU per record that counting patterns adds to the scanner's work, in-process.

The reference workload's requests (bench/run.py's: 1,000 records, 80% of bodies unique) go
through the C scanner's check and tally, then the aggregator, made without a Masker (patterns
not counted, the service's path today) and with one; the two alternate round by round in this
one process, so a slow spell on this shared machine falls on both. The added CPU is set against
the service's whole CPU per record (`--service-us`, from BENCHMARKS.md's latest run), which is
what the issue's 25% limit is about.

    python -m bench.patterns_cost [--cpu-seconds 12] [--service-us 0.79] [--scanner python]

Instructions instead of CPU time (steady on a shared machine): `--passes N --patterns on|off`
runs N passes of one kind and nothing else, for valgrind; the difference between 3 passes and 1
is two passes' work, without the start-up:

    valgrind --tool=callgrind --callgrind-out-file=/dev/null \
        python -m bench.patterns_cost --passes 3 --patterns on
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

LIMIT = 0.25
_ROUNDS = 7
_WINDOW_SECONDS = 1e9  # one window for the whole measurement


@dataclass(frozen=True)
class PatternsCost:
    scanner: str
    off_us: float  # CPU µs per record, patterns not counted, median round
    on_us: float
    added: tuple[float, ...]  # on - off, round by round, µs per record
    service_us: float

    @property
    def added_us(self) -> float:
        return statistics.median(self.added)

    @property
    def share(self) -> float:
        return self.added_us / self.service_us


def _pass(requests: Sequence[PreparedRequest], scanner: Scanner) -> Callable[[], None]:
    labels = LabelRenderer()

    def one_pass() -> None:
        aggregator = Aggregator(_WINDOW_SECONDS, 0.0)
        for request in requests:
            aggregator.add(1.0, scanner.tally(scanner.check(request.payload), labels))

    return one_pass


def _cpu_per_pass(one_pass: Callable[[], None], seconds: float) -> float:
    # process_time, not wall time: on a shared machine a stolen time slice is not our cost.
    passes = 0
    started = time.process_time()
    while (spent := time.process_time() - started) < seconds:
        one_pass()
        passes += 1
    return spent / passes


def measure(
    requests: Sequence[PreparedRequest],
    key: str,
    native: bool,
    cpu_seconds: float,
    service_us: float,
) -> PatternsCost:
    make = NativeScanner if native else ViewScanner
    off, on = _pass(requests, make(key)), _pass(requests, make(key, masker=Masker()))
    off()  # warm caches and label renderings outside the clock
    on()
    records = sum(request.records for request in requests)
    per_round = cpu_seconds / _ROUNDS / 2
    offs, ons = [], []
    for _ in range(_ROUNDS):
        offs.append(_cpu_per_pass(off, per_round) / records * 1e6)
        ons.append(_cpu_per_pass(on, per_round) / records * 1e6)
    return PatternsCost(
        make.name,
        statistics.median(offs),
        statistics.median(ons),
        tuple(b - a for a, b in zip(offs, ons, strict=True)),
        service_us,
    )


def describe(cost: PatternsCost) -> str:
    verdict = "within" if cost.share <= LIMIT else "OVER"
    return (
        f"{cost.scanner} scanner check+tally+aggregator: {cost.off_us:.3f} CPU µs/record without "
        f"patterns, {cost.on_us:.3f} with; added {cost.added_us:.3f} µs/record (median of "
        f"{len(cost.added)} interleaved rounds, {min(cost.added):.3f}-{max(cost.added):.3f}), "
        f"{cost.share:.0%} of the service's {cost.service_us:.2f} µs/record, {verdict} the "
        f"{LIMIT:.0%} limit"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--cpu-seconds", type=float, default=12.0, help="CPU seconds in all")
    parser.add_argument(
        "--service-us", type=float, default=0.79, help="the service's CPU µs per record"
    )
    parser.add_argument(
        "--scanner",
        choices=("native", "python"),
        default="native" if NATIVE_AVAILABLE else "python",
    )
    parser.add_argument("--passes", type=int, default=0, help="only run this many passes")
    parser.add_argument("--patterns", choices=("on", "off"), default="on", help="with --passes")
    args = parser.parse_args(argv)
    workload = Workload()
    if args.passes:
        make = NativeScanner if args.scanner == "native" else ViewScanner
        masker = Masker() if args.patterns == "on" else None
        one_pass = _pass(build_requests(workload), make(workload.attribute_key, masker=masker))
        for _ in range(args.passes):
            one_pass()
        return 0
    cost = measure(
        build_requests(workload),
        workload.attribute_key,
        args.scanner == "native",
        args.cpu_seconds,
        args.service_us,
    )
    print(describe(cost))
    return 0 if cost.share <= LIMIT else 1


if __name__ == "__main__":
    raise SystemExit(main())
