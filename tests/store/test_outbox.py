"""The sinks' outbox in the SQLite store: bounded like the queue, read back in order after a
restart, each row forgotten once its report is delivered."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import structlog

from otlp_stats.counting.aggregator import ValueReport, WindowReport
from otlp_stats.counting.sketches import DistinctEstimate
from otlp_stats.reporting.reporter import render_json, report_to_dict
from otlp_stats.reporting.sinks.base import QueuedSink, ReportSinks, RetryLater, SinkReport
from otlp_stats.reporting.sinks.outbox import KeptReport, idempotency_key, sink_id
from otlp_stats.store.outbox import SqliteOutbox

T0 = 1_767_225_600.0  # 2026-01-01T00:00:00Z
LOG = structlog.get_logger("test")


def report(n: int) -> SinkReport:
    window = WindowReport(
        start=T0 + 10 * n,
        end=T0 + 10 * (n + 1),
        partial=False,
        records=n + 1,
        distinct=DistinctEstimate.exact(1),
        values=(ValueReport(f"svc-{n}", DistinctEstimate.exact(1), n + 1),),
        revision=1,
    )
    return SinkReport(
        window,
        lambda w: report_to_dict(w, "service.name", "unknown"),
        lambda fields: render_json(window, "service.name", "unknown"),
    )


class Down:
    """A peer that never answers; counts nothing."""

    async def open(self) -> None:
        return None

    async def deliver(self, item: SinkReport) -> None:
        raise RetryLater("down")

    async def close(self) -> None:
        return None


class Recording:
    """A peer that takes everything and remembers the keys and lines, in order."""

    def __init__(self) -> None:
        self.got: list[tuple[str, str]] = []

    async def open(self) -> None:
        return None

    async def deliver(self, item: SinkReport) -> None:
        self.got.append((item.idempotency_key, item.line))

    async def close(self) -> None:
        return None


def sink(target: Down | Recording, queue_size: int, uri: str = "http://hook/") -> QueuedSink:
    return QueuedSink("http", target, queue_size, 1000, LOG, sink_id=sink_id(uri))


def test_rows_come_back_in_order_after_a_reopen_grouped_by_report(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    outbox = SqliteOutbox(path)
    first = outbox.keep(["a", "b"], "k1", '{"n":1}')
    second = outbox.keep(["a"], "k2", '{"n":2}')
    outbox.forget("a", first)
    outbox.close()
    reopened = SqliteOutbox(path)
    assert reopened.left() == [
        KeptReport(first, "k1", '{"n":1}', ("b",)),
        KeptReport(second, "k2", '{"n":2}', ("a",)),
    ]
    # Numbers go on after a reopen: a new report sorts after the kept ones.
    assert reopened.keep(["a"], "k3", "{}") > second
    reopened.close()


def test_a_full_queue_forgets_the_oldest_rows_so_the_outbox_holds_what_the_queue_holds(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    down = sink(Down(), queue_size=2)
    # Not started: the reports are kept and queued at once, nothing delivers them.
    sinks = ReportSinks([down], stdout=False, log=LOG, outbox=SqliteOutbox(path), replica="r1")
    for n in range(5):
        sinks.offer(report(n))
    assert down.dropped == 3 and down.depth == 2
    keys = [kept.key for kept in SqliteOutbox(path).left()]
    assert keys == [f"2026-01-01T00:00:{10 * n}Z/service.name/1/r1" for n in (3, 4)]


def test_kept_reports_are_delivered_first_in_order_once_each_and_then_forgotten(
    tmp_path: Path,
) -> None:
    path = tmp_path / "state.db"
    before = ReportSinks([sink(Down(), 10)], stdout=False, log=LOG, outbox=SqliteOutbox(path))
    expected = []
    for n in range(3):
        item = report(n)
        before.offer(item)
        expected.append((item.idempotency_key, item.line))
    # The restart: a new process, the same store and sink URI, now a peer that answers.
    peer = Recording()
    after = ReportSinks([sink(peer, 10)], stdout=False, log=LOG, outbox=SqliteOutbox(path))
    after.start()
    fresh = report(3)
    after.offer(fresh)
    after.close(grace=10)
    assert peer.got == [*expected, (fresh.idempotency_key, fresh.line)]
    assert SqliteOutbox(path).left() == []


def test_rows_of_a_sink_no_longer_configured_are_forgotten_at_start(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    outbox = SqliteOutbox(path)
    outbox.keep([sink_id("http://gone/")], "k", "{}")
    peer = Recording()
    sinks = ReportSinks([sink(peer, 10)], stdout=False, log=LOG, outbox=outbox)
    sinks.start()
    sinks.close(grace=10)
    assert peer.got == []
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM outbox").fetchone() == (0,)


def test_the_key_names_window_key_revision_and_replica() -> None:
    fields = {"window_start": "2026-01-01T00:00:00Z", "attribute_key": "k8s", "revision": 2}
    assert idempotency_key(fields, "") == "2026-01-01T00:00:00Z/k8s/2/-"
    assert idempotency_key(fields, "east-1") == "2026-01-01T00:00:00Z/k8s/2/east-1"


def test_the_sink_id_is_stable_and_ignores_the_password() -> None:
    assert sink_id("redis-stream://u:one@h:6379/0?stream=s") == sink_id(
        "redis-stream://u:two@h:6379/0?stream=s"
    )
    assert sink_id("http://a/") != sink_id("http://b/")
