"""The per-thread and perf counts of bench/small_threads.py, and bench/path_cpu.py's timers."""

from __future__ import annotations

import os
import threading
from pathlib import Path

import pytest

from bench.path_cpu import PathTimer, _timed_sync
from bench.small_threads import ThreadSample, perf_line, sample_threads, thread_lines


def test_every_thread_of_a_process_is_sampled_with_its_name() -> None:
    started = threading.Event()
    finish = threading.Event()

    def idle() -> None:
        started.set()
        finish.wait()

    worker = threading.Thread(target=idle, name="probe-idle")
    worker.start()
    started.wait()
    try:
        samples = sample_threads(os.getpid())
    finally:
        finish.set()
        worker.join()
    assert str(worker.native_id) in samples
    assert str(threading.get_native_id()) in samples
    assert all(sample.voluntary >= 0 and sample.user_ticks >= 0 for sample in samples.values())


def test_thread_figures_are_per_request_and_a_new_thread_counts_from_zero() -> None:
    ticks = os.sysconf("SC_CLK_TCK")
    before = {"10": ThreadSample("python", 0, 0, 5, 1)}
    after = {
        "10": ThreadSample("python", ticks, ticks // 2, 105, 51),  # 1 s user, 0.5 s system
        "11": ThreadSample("event_engine", 0, 0, 20, 0),  # started during the measurement
    }
    lines = thread_lines(before, after, requests=1000)
    assert "user 1000.0 µs" in lines[0] and "system  500.0 µs" in lines[0]
    assert "0.10 voluntary" in lines[0] and "0.05 involuntary" in lines[0]
    assert lines[1].lstrip().startswith("event_engine") and "0.02 voluntary" in lines[1]
    assert lines[-1].lstrip().startswith("all 2 threads") and "0.12 voluntary" in lines[-1]


def test_perf_counts_are_divided_by_the_answers_sent(tmp_path: Path) -> None:
    output = tmp_path / "perf.csv"
    output.write_text(
        "# started on Thu Dec  3\n\n"
        "2000.5,msec,task-clock,2000500000,100.00,0.9,CPUs utilized\n"
        "50000,,context-switches,2000500000,100.00,,\n"
        "<not supported>,,cycles,0,100.00,,\n"
        "5000,,syscalls:sys_enter_sendmsg,2000500000,100.00,,\n"
    )
    line = perf_line(output)
    assert "(5,000 requests)" in line and "CPU 400 µs" in line
    assert "context-switches 10.00" in line and "cycles" not in line


def test_a_timed_part_counts_its_calls_and_cpu_and_passes_results_and_errors_through() -> None:
    timer = PathTimer()

    def spin(n: int) -> int:
        if n < 0:
            raise ValueError(f"negative: {n}")
        return sum(range(n))

    timed = _timed_sync(timer, "spin", spin)
    assert timed(200_000) == sum(range(200_000))
    with pytest.raises(ValueError, match="negative"):
        timed(-1)
    calls, microseconds = timer.per_call_us()["spin"]
    assert calls == 2
    assert microseconds > 0  # summing 200,000 numbers takes CPU on any machine
