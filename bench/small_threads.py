"""Where a small OTLP/gRPC request's server CPU goes, in counts that shared cores move less.

For the service, the plain baseline and the bare grpc.aio server (bench/small_requests.py),
interleaved in rounds, each under bench/small_client.py (32 callers, unpaced or `--rate`):
- CPU per request of every thread, user and system, and its voluntary and involuntary context
  switches per request, from /proc/PID/task/*/ (which threads work per request, and which are
  idle);
- with `--perf`, `perf stat` of the whole process over the same seconds: task-clock, context
  switches, wake-ups, armed timers and system calls, per request (the count of `sendmsg`, one
  per answered call, is the request count: the client's own count includes its warm-up).

    python -m bench.small_threads --rounds 2 --perf
    python -m bench.small_threads --rate 1000 --only service --only baseline

Callgrind (bench/small_instructions.py) counts user-space instructions only; this counts the
rest. Figures in BENCHMARKS.md, "Small requests (issue 17)".
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.server_process import ServerProcess
from bench.small_requests import small_request_servers

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")
WARMUP_SECONDS = 1.5
# One answered call, one sendmsg by the server's event engine: what the perf counts divide by.
PERF_EVENTS = (
    "task-clock",
    "context-switches",
    "sched:sched_wakeup",
    "timer:hrtimer_start",
    "raw_syscalls:sys_enter",
    "syscalls:sys_enter_epoll_wait",
    "syscalls:sys_enter_epoll_pwait",
    "syscalls:sys_enter_futex",
    "syscalls:sys_enter_write",
    "syscalls:sys_enter_sendmsg",
)


@dataclass(frozen=True)
class ThreadSample:
    name: str
    user_ticks: int
    system_ticks: int
    voluntary: int
    involuntary: int


def sample_threads(pid: int) -> dict[str, ThreadSample]:
    """Every thread of `pid` by thread id: its name, CPU ticks and context switches so far."""
    samples = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            status = (task / "status").read_text()
        except OSError:
            continue  # a thread that ended between the listing and the read
        fields = stat[stat.rindex(")") + 2 :].split()
        switches = {
            key: int(value)
            for key, _, value in (line.partition(":") for line in status.splitlines())
            if key in ("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")
        }
        samples[task.name] = ThreadSample(
            name=stat[stat.index("(") + 1 : stat.rindex(")")],
            user_ticks=int(fields[11]),
            system_ticks=int(fields[12]),
            voluntary=switches["voluntary_ctxt_switches"],
            involuntary=switches["nonvoluntary_ctxt_switches"],
        )
    return samples


def thread_lines(
    before: Mapping[str, ThreadSample], after: Mapping[str, ThreadSample], requests: float
) -> list[str]:
    """Per thread that did anything: µs of user and system CPU and switches, per request."""
    lines = []
    totals = [0.0, 0.0, 0.0, 0.0]
    for tid, now in sorted(after.items(), key=lambda item: int(item[0])):
        was = before.get(tid, ThreadSample(now.name, 0, 0, 0, 0))
        user = (now.user_ticks - was.user_ticks) / _TICKS_PER_SECOND / requests * 1e6
        system = (now.system_ticks - was.system_ticks) / _TICKS_PER_SECOND / requests * 1e6
        voluntary = (now.voluntary - was.voluntary) / requests
        involuntary = (now.involuntary - was.involuntary) / requests
        figures = (user, system, voluntary, involuntary)
        totals = [a + b for a, b in zip(totals, figures, strict=True)]
        lines.append(
            f"  {now.name:<16} user {user:6.1f} µs  system {system:6.1f} µs  "
            f"switches {voluntary:5.2f} voluntary {involuntary:5.2f} involuntary"
        )
    user, system, voluntary, involuntary = totals
    lines.append(
        f"  {'all ' + str(len(after)) + ' threads':<16} user {user:6.1f} µs  system {system:6.1f} "
        f"µs  switches {voluntary:5.2f} voluntary {involuntary:5.2f} involuntary"
    )
    return lines


def perf_line(output: Path) -> str:
    """`perf stat -x,` output as counts per request (per sendmsg)."""
    counts: dict[str, float] = {}
    for line in output.read_text().splitlines():
        parts = line.split(",")
        if len(parts) > 2 and parts[0] and not line.startswith("#"):
            try:
                counts[parts[2]] = float(parts[0])
            except ValueError:
                continue  # "<not supported>"
    calls = counts.get("syscalls:sys_enter_sendmsg", 0.0)
    if not calls:
        return "  perf: no sendmsg counted"
    per = {name.split(":")[-1].removeprefix("sys_enter_"): n / calls for name, n in counts.items()}
    cpu = per.pop("task-clock", 0.0) * 1000  # msec to µs
    rest = "  ".join(f"{name} {value:.2f}" for name, value in per.items() if name != "sendmsg")
    return f"  perf, per request ({calls:,.0f} requests): CPU {cpu:.0f} µs  {rest}"


def measure(
    name: str, argv: Sequence[str], args: argparse.Namespace, cwd: Path, env: Mapping[str, str]
) -> list[str]:
    server_argv = [*argv, "--http-listen", "127.0.0.1:0"]
    with ServerProcess(name, server_argv, cwd=cwd, env=env) as server:
        server.start()
        client_argv = [
            sys.executable, "-m", "bench.small_client", "--transport=grpc",
            f"--target=127.0.0.1:{server.grpc_port}", f"--server-pid={server.pid}",
            f"--records={args.records}", "--callers=32", f"--rate={args.rate}",
            f"--warmup={WARMUP_SECONDS}", f"--duration={args.duration + 1.0}",
        ]  # fmt: skip
        client = subprocess.Popen(
            client_argv,
            cwd=cwd,
            env=dict(env),
            stdout=subprocess.PIPE,
            text=True,
        )
        time.sleep(WARMUP_SECONDS + 0.5)
        perf_out = cwd / f"perf-{name}.csv"
        perf = None
        if args.perf:
            events = ",".join(PERF_EVENTS)
            perf_argv = ["perf", "stat", "-x,", "-e", events, "-p", str(server.pid), "-o"]
            perf = subprocess.Popen(
                [*perf_argv, str(perf_out)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        before, started = sample_threads(server.pid), time.monotonic()
        time.sleep(args.duration)
        after, elapsed = sample_threads(server.pid), time.monotonic() - started
        if perf is not None:
            perf.send_signal(signal.SIGINT)
            perf.wait(30)
        out, _ = client.communicate(timeout=args.duration + 60)
        tally = json.loads(out.strip().splitlines()[-1])
        server.stop()
    rate = tally["requests"] / tally["elapsed_seconds"]
    lines = [f"{name}, {args.records} record(s): {rate:,.0f} requests/s"]
    lines += thread_lines(before, after, rate * elapsed)
    if perf is not None:
        lines.append(perf_line(perf_out))
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    # Late import, as bench/small_requests.py does: bench.run imports the bench modules.
    from bench.run import _clean_env, baseline_argv, service_argv
    from otlp_stats.loadgen import Workload

    parser = argparse.ArgumentParser(prog="python -m bench.small_threads", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--duration", type=float, default=5.0, help="seconds measured")
    parser.add_argument("--records", type=int, default=1, help="records per request")
    parser.add_argument("--rate", type=float, default=0.0, help="requests/s (0: unpaced)")
    parser.add_argument("--perf", action="store_true", help="also perf stat the process")
    parser.add_argument("--service-args", default="", help="extra flags for the service")
    parser.add_argument("--only", choices=("service", "baseline", "bare"), action="append")
    args = parser.parse_args(argv)
    if args.perf and shutil.which("perf") is None:
        parser.error("--perf needs perf on PATH")
    workload = Workload()
    servers = small_request_servers(
        service_argv(workload, args.service_args), baseline_argv(workload)
    )
    chosen = args.only or ["service", "baseline", "bare"]
    with tempfile.TemporaryDirectory(prefix="otlp-bench-threads-") as scratch:
        for _ in range(max(1, args.rounds)):
            for name in chosen:
                lines = measure(name, servers[name], args, Path(scratch), _clean_env())
                print("\n".join(lines), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
