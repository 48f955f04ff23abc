"""--durability ack with Redis: three replicas on a real redis-server with AOF on, under load
from retrying senders, one replica SIGKILLed at a time and restarted with the same
--replica-id. Every acknowledged message is in its window and its day afterwards, and records
count more than acknowledged only for the requests a kill caught before their answer."""

from __future__ import annotations

import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from otlp_stats.loadgen.driver import LoadSummary
from otlp_stats.loadgen.workload import build_requests
from tests.store.test_durability_kills import (
    KEY,
    WINDOW,
    RecordingExporter,
    acknowledged_per_value,
    assert_counted_once,
    free_port,
    kill_workload,
    load_until,
    sdk_sender,
    wait_for_day,
    window_records,
)
from tests.store.test_store_redis import send
from tests.store.test_store_sqlite import day_of, wait_for_window_start
from tests.support.fakes import export_request, log_record
from tests.support.redistools import RedisServer
from tests.support.servicetools import ServiceProcess, running_service

REPLICAS = ("r1", "r2", "r3")
KILLS = 6
# The load generator's concurrent callers per run, as in test_durability_kills.
CALLERS = 4


@pytest.fixture
def aof_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path, appendfsync="everysec")
    server.start()
    yield server
    server.stop()


def start_replica(url: str, name: str, ports: tuple[int, int, int]) -> ServiceProcess:
    grpc_port, http_port, admin_port = ports
    service = ServiceProcess(
        *("--store", url, "--replica-id", name, "--attribute-key", KEY),
        *("--window", str(WINDOW), "--merge-grace", "1", "--claim-timeout", "5"),
        *("--durability", "ack", "--sketch-lg-k", "14"),
        *("--grpc-listen", f"127.0.0.1:{grpc_port}", "--http-listen", f"127.0.0.1:{http_port}"),
        *("--admin-listen", f"127.0.0.1:{admin_port}"),
    )
    service.wait_serving()
    return service


def grpc_health(service: ServiceProcess) -> int:
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        answer = stub.Check(health_pb2.HealthCheckRequest(service=""), timeout=5)
    return int(answer.status)


def refused(service: ServiceProcess, bodies: list[str]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as refusal:
        send(service, bodies)
    code: grpc.StatusCode = refusal.value.code()
    return code


def test_a_replica_is_not_ready_while_redis_is_down_and_refuses_before_counting(
    aof_redis: RedisServer,
) -> None:
    flags = ("--store", aof_redis.url, "--replica-id", "solo", "--attribute-key", KEY)
    with running_service(*flags, "--durability", "ack") as service:
        send(service, ["before"])
        assert (service.metric("otlp_stats_journal_commits_total") or 0) >= 1
        assert service.http_get("/readyz")[0] == 200
        aof_redis.stop()
        # The Export that finds Redis gone: counted, its commit fails, refused retryable.
        assert refused(service, ["during"]) is grpc.StatusCode.UNAVAILABLE
        assert (service.metric("otlp_stats_journal_commit_failures_total") or 0) >= 1
        # Not ready from then on, saying why, on the admin port and the gRPC health service.
        status, body = service.http_get("/readyz")
        assert status == 503
        assert "journal cannot be written" in json.loads(body)["exports"]
        assert grpc_health(service) == health_pb2.HealthCheckResponse.NOT_SERVING
        assert service.metric("otlp_stats_journal_writable") == 0
        # Retries meanwhile are refused before they are counted: they add no record.
        counted = service.metric("otlp_stats_records_counted_total")
        for _ in range(3):
            assert refused(service, ["during"]) is grpc.StatusCode.UNAVAILABLE
        assert service.metric("otlp_stats_records_counted_total") == counted
        aof_redis.start()
        # Ready again once the journal's probe reaches Redis (every second).
        deadline = time.monotonic() + 10
        while service.http_get("/readyz")[0] != 200:
            assert time.monotonic() < deadline, "not ready again after Redis came back"
            time.sleep(0.1)
        assert grpc_health(service) == health_pb2.HealthCheckResponse.SERVING
        # The same Export, retried once Redis is back: accepted.
        send(service, ["during"])
        assert service.metric("otlp_stats_journal_writable") == 1
        assert service.stop() == 0


def test_a_replica_waits_for_redis_to_load_its_journal_before_serving(
    aof_redis: RedisServer,
) -> None:
    aof_redis.stop()
    admin = free_port()
    flags = ("--store", aof_redis.url, "--replica-id", "solo", "--attribute-key", KEY)
    service = ServiceProcess(*flags, "--durability", "ack", "--admin-listen", f"127.0.0.1:{admin}")
    try:
        service.wait_log("journal_load_waiting")
        # Not ready while the journal waits: the admin port says so, nothing is served.
        service.ports = {"admin_port": admin}
        status, _ = service.http_get("/readyz")
        assert status == 503
        aof_redis.start()
        service.wait_serving()
        send(service, ["after"])
        assert service.stop() == 0
    finally:
        if service.process.poll() is None:
            service.process.kill()


def send_two_keys(service: ServiceProcess, first: int, count: int) -> None:
    """`count` Exports of two records each, every record with both keys, bodies all distinct."""
    with grpc.insecure_channel(service.grpc_target) as channel:
        stub = LogsServiceStub(channel)  # type: ignore[no-untyped-call]
        for n in range(first, first + count):
            records = (
                log_record(f"body {n} {half}", **{KEY: f"t{n % 3}", "region": f"r{n % 2}"})
                for half in (0, 1)
            )
            stub.Export(export_request(records), timeout=10)


def key_day(service: ServiceProcess, day: str, key: str) -> tuple[int, int]:
    """Records and distinct messages of a key's day, over its values."""
    status, body = service.http_get(f"/v1/distinct?resolution=1d&from={day}&key={key}")
    assert status == 200, body
    periods = json.loads(body)["periods"]
    values = [entry for period in periods for entry in period["values"]]
    return sum(v["records"] for v in values), sum(v["distinct_messages"] for v in values)


def test_two_keys_survive_a_kill_each_in_its_own_key(aof_redis: RedisServer) -> None:
    flags: tuple[str, ...] = ("--store", aof_redis.url, "--replica-id", "solo")
    flags += ("--window", str(WINDOW))
    flags += ("--attribute-key", KEY, "--attribute-key", "region", "--merge-grace", "0.5")
    service = ServiceProcess(*flags, "--durability", "ack")
    try:
        service.wait_serving()
        began = wait_for_window_start(window=WINDOW)
        # Acknowledged, then killed before the window closes: only the journal holds them.
        send_two_keys(service, 0, 20)
        service.process.send_signal(signal.SIGKILL)
        service.process.wait(10)
        service = ServiceProcess(*flags, "--durability", "ack")
        service.wait_serving()
        restored = service.wait_log("state_restored")
        send_two_keys(service, 20, 20)
        deadline = time.monotonic() + 15
        while True:
            days = {key: key_day(service, day_of(began), key) for key in (KEY, "region")}
            if all(records >= 80 for records, _ in days.values()):
                break
            assert time.monotonic() < deadline, f"missing from the day: {days}"
            time.sleep(0.2)
        assert service.stop() == 0
    finally:
        if service.process.poll() is None:
            service.process.kill()
    # The first key's records are said once, though journaled once per key.
    assert restored["journaled_records"] == 40
    # Exactly the acknowledged records and messages, in each key: none lost, none twice.
    assert days == {KEY: (80, 80), "region": (80, 80)}


def test_replicas_killed_one_at_a_time_lose_nothing_acknowledged(
    aof_redis: RedisServer,
) -> None:
    ports = {name: (free_port(), free_port(), free_port()) for name in REPLICAS}
    workload = kill_workload(pool_size=3_000)
    # Every body is in one request only; each replica's sender gets its own third of them.
    requests = build_requests(workload)
    began = wait_for_window_start(window=WINDOW)
    services = {name: start_replica(aof_redis.url, name, ports[name]) for name in REPLICAS}
    stop = threading.Event()
    summaries: dict[str, list[LoadSummary]] = {name: [] for name in REPLICAS}
    senders = [
        threading.Thread(
            target=load_until,
            args=(
                f"127.0.0.1:{ports[name][0]}",
                requests[n :: len(REPLICAS)],
                stop,
                summaries[name],
            ),
        )
        for n, name in enumerate(REPLICAS)
    ]
    exporter = RecordingExporter(f"127.0.0.1:{ports[REPLICAS[0]][0]}")
    senders.append(threading.Thread(target=sdk_sender, args=(exporter, stop)))
    for sender in senders:
        sender.start()
    chance = random.Random()
    journaled: list[int] = []
    try:
        for kill in range(KILLS):
            time.sleep(chance.uniform(0.3, 1.2))
            name = REPLICAS[kill % len(REPLICAS)]
            services[name].process.send_signal(signal.SIGKILL)
            services[name].process.wait(10)
            services[name] = start_replica(aof_redis.url, name, ports[name])
            journaled.append(services[name].wait_log("state_restored")["journaled_records"])
        stop.set()
        for sender in senders:
            sender.join(60)
        assert not any(sender.is_alive() for sender in senders)
        summary = [chunk for name in REPLICAS for chunk in summaries[name]]
        acknowledged = sum(chunk.records_acknowledged for chunk in summary)
        reader = services[REPLICAS[-1]]
        # Every window the senders fed closes, is merged (or its share added late): wait
        # until the day holds every value's acknowledged records and messages (records alone
        # can reach the figure early, with a kill's extras).
        expected = acknowledged_per_value(summary)
        expected["sdk"] = (len(exporter.acknowledged), len(set(exporter.acknowledged)))
        entries = wait_for_day(reader, day_of(began), expected, every=0.2)
        windows = window_records(reader, began)
        for service in services.values():
            assert service.stop() == 0
    finally:
        stop.set()
        for service in services.values():
            if service.process.poll() is None:
                service.process.kill()
    # Each record in one window, none lost between them, no window merged twice; beyond the
    # acknowledged only what a kill caught between commit and answer.
    extra, sdk_extra = assert_counted_once(
        entries, windows, summary, exporter, "sdk", KILLS, CALLERS
    )
    # The journal did the work: restarts found acknowledged counts no flushed share held.
    assert sum(journaled) > 0
    print(
        json.dumps(
            {
                "replicas": len(REPLICAS),
                "kills": KILLS,
                "acknowledged_records": acknowledged + len(exporter.acknowledged),
                "extra_records": extra + sdk_extra,
                "retries": sum(chunk.retries for chunk in summary),
                "journaled_records_at_restart": journaled,
                "seconds": round(time.time() - began, 1),
            }
        )
    )
