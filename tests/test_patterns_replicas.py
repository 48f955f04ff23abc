"""Issue 20's proof that patterns merge as distinct messages do: the same traffic, sent over gRPC
and OTLP/HTTP to one node or split two different ways across three replicas on a real
redis-server, gives each value the same records, distinct patterns and top patterns in the day,
equal to what the masker and the similarity merge make of the messages in one place."""

from __future__ import annotations

import json
import random
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest

from otlp_stats.patterns.masker import Masker
from otlp_stats.patterns.tally import PatternTable, reported_patterns
from tests.support.fakes import export_request, log_record
from tests.support.grpctools import GrpcChannels
from tests.support.redistools import RedisServer
from tests.support.servicetools import ServiceProcess

KEY = "service.name"
REPLICAS = ("r1", "r2", "r3")
REQUESTS = 36
TEMPLATES = {
    "checkout": (
        "payment {n} accepted in {ms}ms",
        "user {user} logged in from {ip}",
        "order {uuid} shipped",
    ),
    "billing": (
        "invoice {n} sent to {email}",
        "retrying charge {n} after {ms}ms",
        "cache miss key={word} size={n}KB",
    ),
}
USERS = ("alice", "bob", "carol", "dave")
WORDS = ("alpha", "beta", "gamma")
Message = tuple[str, str]  # (value, body)
Expected = dict[str, dict[str, Any]]


def body(rng: random.Random, template: str) -> str:
    return template.format(
        n=rng.randrange(100_000),
        ms=rng.randrange(1_000),
        user=rng.choice(USERS),
        ip=f"10.0.{rng.randrange(256)}.{rng.randrange(256)}:{rng.randrange(1024, 65535)}",
        uuid=f"{rng.getrandbits(128):032x}",
        email=f"{rng.choice(USERS)}{rng.randrange(99)}@example.com",
        word=rng.choice(WORDS),
    )


def traffic(rng: random.Random) -> list[list[Message]]:
    """Requests of 1-30 records each, the value on the resource, any mix of templates."""
    requests = []
    for _ in range(REQUESTS):
        value = rng.choice(sorted(TEMPLATES))
        requests.append(
            [(value, body(rng, rng.choice(TEMPLATES[value]))) for _ in range(rng.randint(1, 30))]
        )
    return requests


def as_request(messages: Sequence[Message]) -> ExportLogsServiceRequest:
    [value] = {value for value, _ in messages}
    return export_request([log_record(text) for _, text in messages], resource={KEY: value})


def expected_of(requests: Sequence[Sequence[Message]]) -> Expected:
    """Each value's day, computed in one place from the messages themselves."""
    masker = Masker()
    tables: dict[str, PatternTable] = {}
    for request in requests:
        for value, text in request:
            tables.setdefault(value, PatternTable()).add(masker.mask(text), 1, text)
    expected: Expected = {}
    for value, table in tables.items():
        reported = reported_patterns(table.counts(), top=len(table))
        expected[value] = {
            "records": table.records,
            "distinct_patterns": reported.distinct,
            "top_patterns": [
                {"pattern": c.pattern, "records": c.records, "example": c.example}
                for c in reported.top
            ],
        }
    return expected


def send(
    grpc_channels: GrpcChannels,
    services: Sequence[ServiceProcess],
    requests: Sequence[Sequence[Message]],
    pick: Callable[[int], int],
) -> None:
    """Request i to services[pick(i)], every other one over OTLP/HTTP."""
    for number, messages in enumerate(requests):
        service = services[pick(number)]
        request = as_request(messages)
        if number % 2:
            posted = urllib.request.Request(
                f"{service.http_url}/v1/logs",
                data=request.SerializeToString(),
                headers={"Content-Type": "application/x-protobuf"},
                method="POST",
            )
            with urllib.request.urlopen(posted, timeout=10) as response:
                assert response.status == 200
        else:
            grpc_channels.logs_stub(service.grpc_target).Export(request, timeout=10)


def day_answer(service: ServiceProcess, records: int, timeout: float = 30.0) -> Expected:
    """The day's patterns per value, once every record sent is in the stored windows (their
    windows close a second after they start, then the replicas merge them)."""
    day = time.strftime("%Y-%m-%d", time.gmtime())
    deadline = time.monotonic() + timeout
    while True:
        status, text = service.http_get(f"/v1/patterns?key={KEY}&from={day}&top=all")
        assert status == 200, text
        answer = json.loads(text)
        stored = sum(value["records"] for value in answer["values"])
        if stored >= records:
            assert stored == records
            return {
                value["value"]: {
                    "records": value["records"],
                    "distinct_patterns": value["distinct_patterns"],
                    "top_patterns": value["top_patterns"],
                }
                for value in answer["values"]
            }
        assert time.monotonic() < deadline, f"{stored} of {records} records stored"
        time.sleep(0.2)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


def start(*flags: str) -> ServiceProcess:
    service = ServiceProcess("--attribute-key", KEY, "--window", "1", *flags)
    service.wait_serving()
    return service


def test_replicas_and_one_node_agree_on_every_values_patterns(
    grpc_channels: GrpcChannels, redis_server: RedisServer, tmp_path: Path
) -> None:
    rng = random.Random(20)
    requests = traffic(rng)
    expected = expected_of(requests)
    records = sum(len(request) for request in requests)
    # The expectation is not trivial: the similarity merge joined the users' logins.
    assert expected["checkout"]["distinct_patterns"] == 3

    node = start("--store", f"sqlite:///{tmp_path / 'one.db'}")
    try:
        send(grpc_channels, [node], requests, lambda number: 0)
        assert day_answer(node, records) == expected
    finally:
        assert node.stop() == 0

    splits: dict[int, Callable[[int], int]] = {
        1: lambda number: number % len(REPLICAS),
        2: lambda number: (number * 7 // 5) % len(REPLICAS),
    }
    for db, pick in splits.items():
        url = f"{redis_server.url.rsplit('/', 1)[0]}/{db}"
        flags = ("--store", url, "--merge-grace", "1", "--claim-timeout", "5")
        replicas = [start(*flags, "--replica-id", name) for name in REPLICAS]
        try:
            send(grpc_channels, replicas, requests, pick)
            for replica in replicas:
                assert day_answer(replica, records) == expected, f"split {db}, {replica}"
        finally:
            for replica in replicas:
                assert replica.stop() == 0
