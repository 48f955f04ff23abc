"""What a small request costs: server CPU per request for 1- and 10-record Exports (issue 17).

Three servers in interleaved rounds (service, plain baseline, bare handler, service, ...), each
started afresh every round and sent every scenario in turn by bench/small_client.py (32 callers,
its own process, reading the server's CPU from /proc around the measured seconds): 1- and
10-record requests over OTLP/gRPC and 10-record requests over OTLP/HTTP protobuf. The baseline
is bench/baseline_server.py (full decode, a set per value; grpc.aio and a plain aiohttp
handler); the bare server is the same with --transport-only: a grpc.aio handler and an aiohttp
handler that read the request and answer at once. Every figure is the median round's; the
ratios are also given round by round.

One process against two (--processes 2) is measured twice: at saturation as above (the callers
as fast as the servers answer), and at the same offered load for both, paced by the client at
half of what one process took at saturation in the same round: below saturation the two
serving processes do the same work, so the CPU per request of the whole process tree compares
what the design costs rather than how the busy processes share the cores. And a third time at
saturation with h2load (bench/h2load_client.py, in C) as the sender, which leaves the cores to
the server as senders on other machines would; over gRPC the bare handler is measured there too,
as one process and as two sharing the port: the yardstick for what two processes can do.

Run alone: python -m bench.small_requests --rounds 3 --duration 5
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from bench.h2load_client import h2load_path, send_with_h2load
from bench.server_process import ServerFailed, ServerProcess
from otlp_stats.cli.grpc_io import EXPERIMENTS_VARIABLE, POLLER_LISTENER

# Issue 17's targets: service CPU per request over the plain baseline's.
TARGET_HTTP_TO_BASELINE = 0.67
TARGET_GRPC_TO_BASELINE = 1.0
SERVERS = ("service", "baseline", "bare")
# The bare handler on the gRPC listener the service runs on (otlp_stats/cli/grpc_io.py): how
# close to bare grpc.aio the service is, like for like. The baseline keeps grpc's default: it is
# the plain peer as written.
BARE_POLLER = "bare, poller listener"
# Two bare handlers on that listener sharing the port (bench/baseline_server.py --processes 2):
# what grpc.aio itself does when the kernel spreads its connections over two processes, the
# yardstick for --processes 2 over gRPC. Measured only where one is: h2load over gRPC.
BARE_PAIR = "bare, poller listener, 2 processes"
# The service as N=2 serving processes under a supervisor (--processes 2): CPU per request of
# the whole tree (supervisor and both processes, from /proc) within 10% of one process's.
PROCESSES = "processes=2"
TARGET_PROCESSES_TO_ONE = 1.10


@dataclass(frozen=True)
class Scenario:
    transport: str  # "grpc" or "http"
    records: int
    # gRPC connections the callers share (HTTP: aiohttp's pool, one per concurrent caller).
    connections: int = 1
    # Paced at this fraction of one process's rate at saturation in the same round (0: as
    # fast as the server answers).
    load: float = 0.0
    # "python": bench/small_client.py; "h2load": bench/h2load_client.py (C, one body, gRPC
    # with 4 requests in flight per connection).
    client: str = "python"

    @property
    def name(self) -> str:
        door = "OTLP/gRPC" if self.transport == "grpc" else "OTLP/HTTP protobuf"
        many = f", {self.connections} connections" if self.connections > 1 else ""
        paced = f", paced at {self.load:.0%} of 1 process's saturation" if self.load else ""
        client = f", sent by {self.client}" if self.client != "python" else ""
        plural = "s" if self.records != 1 else ""
        return f"{self.records} record{plural}, {door}{many}{paced}{client}"

    @property
    def saturated(self) -> Scenario:
        """The same requests as fast as the server answers: what the pace is a fraction of."""
        return Scenario(self.transport, self.records, self.connections, client=self.client)


SCENARIOS = (Scenario("grpc", 1), Scenario("grpc", 10), Scenario("http", 10))
# Connections, not requests, are spread over processes sharing a port: with one gRPC
# connection one process of two does all the work. Measured for one process and for two.
SPREAD_SCENARIOS = (Scenario("grpc", 10, connections=8),)
# The same offered load to one process and to two, below saturation, with connections to
# spread (aiohttp opens one per concurrent caller). Shorter: at a fixed rate the CPU per
# request varies less than at saturation, and make bench should not grow by much.
PACED_LOAD = 0.5
PACED_SCENARIOS = (
    Scenario("grpc", 10, connections=8, load=PACED_LOAD),
    Scenario("http", 10, load=PACED_LOAD),
)
# One process also at the share each of the two serving processes gets: if two at the paced
# load cost what one costs at half of it, what costs more is each process batching fewer
# requests per wake-up, not work that the design adds.
SHARE_SCENARIOS = tuple(
    Scenario(s.transport, s.records, s.connections, s.load / 2) for s in PACED_SCENARIOS
)
PACED_SHARE_OF_DURATION = 0.4
# At saturation again, sent by a client in C: the Python client spends about what the server
# does per request, so on 2 cores two serving processes share what it leaves them, one core.
H2LOAD_SCENARIOS = (
    Scenario("http", 10, connections=32, client="h2load"),
    Scenario("grpc", 10, connections=8, client="h2load"),
)
PROCESS_SCENARIOS = (*SCENARIOS, *SPREAD_SCENARIOS, *PACED_SCENARIOS, *H2LOAD_SCENARIOS)


@dataclass(frozen=True)
class Figure:
    """One server, one scenario, one round."""

    cpu_us_per_request: float
    requests_per_second: float
    refused: int
    # The load generator's own CPU per request, where it is measured (h2load).
    client_us_per_request: float | None = None


@dataclass
class SmallRequestCost:
    """Every round's figure per (server, scenario name); and what went wrong or was checked."""

    callers: int
    seconds: float
    rounds: dict[tuple[str, str], list[Figure]] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def pace(self, server: str, scenario: Scenario) -> float:
        """Requests per second for a paced scenario: its fraction of one process's rate at
        saturation in this round (measured first in each round), else of `server`'s own."""
        for name in ("service", server):
            figures = self.rounds.get((name, scenario.saturated.name), [])
            if figures:
                return figures[-1].requests_per_second * scenario.load
        raise RuntimeError(f"no saturated figure to pace {scenario.name} by")

    def median(self, server: str, scenario: Scenario) -> Figure | None:
        figures = sorted(
            self.rounds.get((server, scenario.name), []), key=lambda f: f.cpu_us_per_request
        )
        # The upper middle of an even count: the less flattering, as bench/run.py does.
        return figures[len(figures) // 2] if figures else None

    def ratios(
        self, server: str, to: str, scenario: Scenario, theirs_in: Scenario | None = None
    ) -> list[float]:
        """Round by round: server's CPU per request over `to`'s (in `theirs_in`, by default
        the same scenario), in the same round."""
        mine = self.rounds.get((server, scenario.name), [])
        theirs = self.rounds.get((to, (theirs_in or scenario).name), [])
        return [
            a.cpu_us_per_request / b.cpu_us_per_request
            for a, b in zip(mine, theirs, strict=False)
            if b.cpu_us_per_request
        ]


def measure_small_requests(
    servers: Mapping[str, Sequence[str]],
    *,
    seconds: float,
    rounds: int,
    callers: int,
    cwd: Path,
    env: Mapping[str, str],
) -> SmallRequestCost:
    """`servers`: name to argv, without --http-listen; they are measured in this order."""
    cost = SmallRequestCost(callers=callers, seconds=seconds)
    for _ in range(max(1, rounds)):
        for name, argv in servers.items():
            try:
                _measure_one(cost, name, argv, cwd=cwd, env=env)
            except (ServerFailed, RuntimeError, OSError, subprocess.SubprocessError) as error:
                cost.problems.append(f"small requests, {name}: {error}")
    return cost


def _measure_one(
    cost: SmallRequestCost, name: str, argv: Sequence[str], *, cwd: Path, env: Mapping[str, str]
) -> None:
    acknowledged = 0
    with ServerProcess(name, [*argv, "--http-listen", "127.0.0.1:0"], cwd=cwd, env=env) as server:
        server.start()
        h2load = H2LOAD_SCENARIOS if h2load_path() else ()
        h2load_grpc = tuple(scenario for scenario in h2load if scenario.transport == "grpc")
        spread = {
            "service": (*SPREAD_SCENARIOS, *PACED_SCENARIOS, *SHARE_SCENARIOS, *h2load),
            PROCESSES: (*SPREAD_SCENARIOS, *PACED_SCENARIOS, *h2load),
            BARE_POLLER: h2load_grpc,
            BARE_PAIR: h2load_grpc,
        }.get(name, ())
        for scenario in (*(SCENARIOS if name != BARE_PAIR else ()), *spread):
            port = server.grpc_port if scenario.transport == "grpc" else server.http_port
            rate = cost.pace(name, scenario) if scenario.load else 0.0
            tally = _send(scenario, f"127.0.0.1:{port}", server.pid, cost, cwd, env, rate)
            acknowledged += int(tally["records_all"])
            requests = int(tally["requests"])
            if not requests:
                raise RuntimeError(f"no request of {scenario.name} was acknowledged")
            cost.rounds.setdefault((name, scenario.name), []).append(
                Figure(
                    cpu_us_per_request=tally["server_cpu_seconds"] / requests * 1e6,
                    requests_per_second=requests / tally["elapsed_seconds"],
                    refused=int(tally["refused"]),
                    client_us_per_request=(
                        tally["client_cpu_seconds"] / requests * 1e6
                        if "client_cpu_seconds" in tally
                        else None
                    ),
                )
            )
        stopped = server.stop()
    if name in ("bare", BARE_POLLER, BARE_PAIR):
        return  # it counts nothing
    reported = stopped.reported_records
    verdict = "pass" if reported == acknowledged and stopped.exit_code == 0 else "FAIL"
    cost.checks.append(
        f"{name}: {verdict}: acknowledged {acknowledged:,} records, reported {reported:,}; "
        f"exit code {stopped.exit_code}"
    )
    if verdict == "FAIL":
        cost.problems.append(f"small requests, {name}: reported {reported} != {acknowledged}")


def _send(
    scenario: Scenario,
    target: str,
    pid: int,
    cost: SmallRequestCost,
    cwd: Path,
    env: Mapping[str, str],
    rate: float,
) -> dict[str, float]:
    seconds = cost.seconds * (PACED_SHARE_OF_DURATION if rate else 1.0)
    if scenario.client == "h2load":
        return send_with_h2load(
            scenario.transport, target, pid, records=scenario.records,
            connections=scenario.connections, streams=cost.callers // scenario.connections,
            seconds=seconds,
        )  # fmt: skip
    argv = [
        sys.executable, "-m", "bench.small_client", f"--transport={scenario.transport}",
        f"--target={target}", f"--server-pid={pid}", f"--records={scenario.records}",
        f"--callers={cost.callers}", f"--duration={seconds}",
        f"--connections={scenario.connections}", f"--rate={rate}",
    ]  # fmt: skip
    done = subprocess.run(
        argv, cwd=cwd, env=dict(env), capture_output=True, text=True, timeout=cost.seconds + 120
    )
    if done.returncode != 0:
        raise RuntimeError(f"bench.small_client exited {done.returncode}: {done.stderr[-2000:]}")
    tally: dict[str, float] = json.loads(done.stdout.strip().splitlines()[-1])
    return tally


def render_small_requests(cost: SmallRequestCost) -> list[str]:
    """The BENCHMARKS.md section: a table of medians, the targets, every round."""
    lines = [
        "### Small requests (issue 17)",
        "",
        f"Server CPU per request from /proc, {cost.callers} concurrent callers, "
        f"{cost.seconds:g} s per scenario after 1 s of warm-up, servers interleaved in rounds. "
        "Baseline: full decode, a set per value (grpc.aio; a plain aiohttp handler). "
        "Bare: a handler that answers at once. The service serves gRPC on grpc core's "
        "poller-thread listener (otlp_stats/cli/grpc_io.py); baseline and bare on grpc's default "
        "(EventEngine threads), and the bare handler once more on the poller listener.",
        "",
        "| Requests of | Service µs/request | Baseline µs/request | Bare µs/request "
        "| Bare, poller listener | Service ÷ baseline | Service ÷ bare "
        "| Service ÷ bare, poller listener | Service requests/s |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for scenario in SCENARIOS:
        service, baseline, bare, poller = (
            cost.median(server, scenario) for server in (*SERVERS, BARE_POLLER)
        )
        rate = f"{service.requests_per_second:,.0f}" if service else "n/a"
        lines.append(
            f"| {scenario.name} | {_us(service)} | {_us(baseline)} | {_us(bare)} | {_us(poller)} "
            f"| {_over(service, baseline)} | {_over(service, bare)} | {_over(service, poller)} "
            f"| {rate} |"
        )
    lines += ["", *_target_lines(cost), *_processes_lines(cost), "", *_round_lines(cost)]
    lines += [f"- {check}" for check in cost.checks]
    lines += [f"- problem: {problem}" for problem in cost.problems]
    return [*lines, ""]


def _target_lines(cost: SmallRequestCost) -> list[str]:
    lines = []
    for scenario in SCENARIOS:
        http = scenario.transport == "http"
        target = TARGET_HTTP_TO_BASELINE if http else TARGET_GRPC_TO_BASELINE
        service, baseline = cost.median("service", scenario), cost.median("baseline", scenario)
        if service is None or baseline is None:
            lines.append(f"- {scenario.name}: not measured")
            continue
        ratio = service.cpu_us_per_request / baseline.cpu_us_per_request
        verdict = "met" if ratio <= target else "NOT met"
        rounds = " / ".join(f"{r:.2f}" for r in cost.ratios("service", "baseline", scenario))
        lines.append(
            f"- {scenario.name}: service CPU per request at most {target:g}x the baseline's: "
            f"{ratio:.2f}x, {verdict} (round by round: {rounds})"
        )
    return lines


def _processes_lines(cost: SmallRequestCost) -> list[str]:
    """--processes 2 against one process, same rounds: the cost of the supervisor and the
    merge per request (the whole process tree's CPU, from /proc); at saturation, and at the
    same paced load for both."""
    lines = []
    for scenario in PROCESS_SCENARIOS:
        two, one = cost.median(PROCESSES, scenario), cost.median("service", scenario)
        ratios = cost.ratios(PROCESSES, "service", scenario)
        if two is None or one is None or not ratios:
            continue
        # The median of the rounds' ratios: each compares the two at the same moment (and,
        # paced, at the same rate), where the medians' ratio may pair different rounds.
        ratio = sorted(ratios)[len(ratios) // 2]
        verdict = "met" if ratio <= TARGET_PROCESSES_TO_ONE else "NOT met"
        rounds = " / ".join(f"{r:.2f}" for r in ratios)
        lines.append(
            f"- {scenario.name}: --processes 2 CPU per request within "
            f"{TARGET_PROCESSES_TO_ONE - 1:.0%} of one process's: {ratio:.2f}x, median round "
            f"(medians {two.cpu_us_per_request:.0f} vs {one.cpu_us_per_request:.0f} µs), "
            f"{verdict} (round by round: {rounds})"
        )
    if not h2load_path():
        lines.append("- sent by h2load: not measured (no h2load: Debian's nghttp2-client)")
    for scenario in H2LOAD_SCENARIOS:
        if ratios := cost.ratios(BARE_PAIR, BARE_POLLER, scenario):
            rounds = " / ".join(f"{r:.2f}" for r in ratios)
            lines.append(
                f"- {scenario.name}: the yardstick, bare grpc.aio on the same listener, two "
                f"processes sharing the port ÷ one: {sorted(ratios)[len(ratios) // 2]:.2f}x, "
                f"median round (round by round: {rounds})"
            )
    for paced, share in zip(PACED_SCENARIOS, SHARE_SCENARIOS, strict=True):
        if ratios := cost.ratios(PROCESSES, "service", paced, share):
            rounds = " / ".join(f"{r:.2f}" for r in ratios)
            lines.append(
                f"- {paced.name}: --processes 2 ÷ one process at {share.load:.0%} (what each "
                f"serving process gets): {sorted(ratios)[len(ratios) // 2]:.2f}x, median round "
                f"(round by round: {rounds})"
            )
    return lines


def _round_lines(cost: SmallRequestCost) -> list[str]:
    lines = []
    names = list(dict.fromkeys(server for server, _ in cost.rounds))
    for scenario in (*PROCESS_SCENARIOS, *SHARE_SCENARIOS):
        for server in names:
            figures = cost.rounds.get((server, scenario.name), [])
            if figures:
                spread = " / ".join(f"{f.cpu_us_per_request:.0f}" for f in figures)
                rates = " / ".join(f"{f.requests_per_second:,.0f}" for f in figures)
                refused = sum(f.refused for f in figures)
                client = " / ".join(
                    f"{f.client_us_per_request:.0f}"
                    for f in figures
                    if f.client_us_per_request is not None
                )
                lines.append(
                    f"- {scenario.name}, {server}: µs/request by round {spread} "
                    f"(requests/s {rates}); refused {refused}"
                    + (f"; the client's own CPU µs/request {client}" if client else "")
                )
        if bare := " / ".join(f"{r:.2f}" for r in cost.ratios("service", "bare", scenario)):
            lines.append(f"- {scenario.name}, service ÷ bare round by round: {bare}")
        for other in (name for name in names if name not in SERVERS):
            if against := " / ".join(f"{r:.2f}" for r in cost.ratios("service", other, scenario)):
                lines.append(f"- {scenario.name}, service ÷ {other} round by round: {against}")
    return lines


def _us(figure: Figure | None) -> str:
    return f"{figure.cpu_us_per_request:.0f}" if figure else "n/a"


def _over(a: Figure | None, b: Figure | None) -> str:
    if a is None or b is None or not b.cpu_us_per_request:
        return "n/a"
    return f"{a.cpu_us_per_request / b.cpu_us_per_request:.2f}"


def small_request_servers(service: Sequence[str], baseline: Sequence[str]) -> dict[str, list[str]]:
    """Service, baseline and bare argvs from the harness's service and baseline argvs."""
    bare = [*baseline, "--transport-only", "--records-per-request", "0"]
    return {
        "service": list(service),
        "baseline": list(baseline),
        "bare": bare,
        BARE_POLLER: ["env", f"{EXPERIMENTS_VARIABLE}={POLLER_LISTENER}", *bare],
        BARE_PAIR: ["env", f"{EXPERIMENTS_VARIABLE}={POLLER_LISTENER}", *bare, "--processes", "2"],
        PROCESSES: [*service, "--processes", "2"],
    }


def main(argv: Sequence[str] | None = None) -> int:
    # Late import: bench.run imports this module for `make bench`.
    from bench.run import _clean_env, baseline_argv, service_argv
    from otlp_stats.loadgen import Workload

    parser = argparse.ArgumentParser(prog="python -m bench.small_requests", description=__doc__)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per scenario")
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--service-args", default="", help="extra flags for the service")
    parser.add_argument(
        "--only",
        choices=(*SERVERS, BARE_POLLER, BARE_PAIR, PROCESSES),
        action="append",
        help="measure only these servers",
    )
    parser.add_argument(
        "--also",
        action="append",
        default=[],
        metavar="NAME=COMMAND",
        help="another server measured in the same rounds, e.g. an older checkout of the service: "
        "'before=env PYTHONPATH=/tmp/old python -m otlp_stats --grpc-listen 127.0.0.1:0 ...'",
    )
    args = parser.parse_args(argv)
    workload = Workload()
    servers = small_request_servers(
        service_argv(workload, args.service_args), baseline_argv(workload)
    )
    if args.only:
        servers = {name: argv for name, argv in servers.items() if name in args.only}
    for also in args.also:
        name, _, command = also.partition("=")
        servers[name] = shlex.split(command)
    print(f"bench: small requests: {shlex.join(sys.argv)}", file=sys.stderr)
    with tempfile.TemporaryDirectory(prefix="otlp-bench-small-") as scratch:
        cost = measure_small_requests(
            servers, seconds=args.duration, rounds=args.rounds, callers=args.callers,
            cwd=Path(scratch), env=_clean_env(),
        )  # fmt: skip
    print("\n".join(render_small_requests(cost)))
    return 1 if cost.problems else 0


if __name__ == "__main__":
    sys.exit(main())
