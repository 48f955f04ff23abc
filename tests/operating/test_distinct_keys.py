"""`key=` on GET /v1/distinct and `--key` on `otlp-stats query`: one attribute key's periods,
the first configured key by default, an unknown key refused in one line naming the keys."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from otlp_stats.counting.aggregator import Aggregator, LabelTally, WindowSnapshot
from otlp_stats.operating.admin import add_distinct_route
from otlp_stats.operating.query import DistinctQueries, QueryScope
from otlp_stats.store.periods import DEFAULT_RETENTION
from otlp_stats.store.sqlite import SqliteStore
from tests.support.fakes import FakeClock

REPO = Path(__file__).resolve().parents[2]
SERVICE = "svc"
NAMESPACE = "k8s.namespace.name"
WINDOW = 10.0
ROLLUPS = ("1d",)


def snapshot(start: float, batch: dict[str | None, LabelTally], key: str) -> WindowSnapshot:
    aggregator = Aggregator(WINDOW, start, keep_sketches=True)
    aggregator.add(start + 1, batch)
    [report] = aggregator.close_until(start + WINDOW)
    assert report.snapshot is not None
    closed = report.snapshot
    return WindowSnapshot(closed.start, closed.end, closed.tallies, closed.overflow_values, key)


@pytest.fixture
def start() -> float:
    """A closed window a few minutes ago: within every retention."""
    return (time.time() - 300) // WINDOW * WINDOW


@pytest.fixture
def store_path(tmp_path: Path, start: float) -> Path:
    """One window of two keys: the service key's values and the namespace key's."""
    path = tmp_path / "state.db"
    store = SqliteStore(path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    checkout = LabelTally.of_hashes([1, 2, 3])
    shop, dev = LabelTally.of_hashes([1, 2]), LabelTally.of_hashes([3])
    store.commit(
        [
            snapshot(start, {"checkout": checkout}, SERVICE),
            snapshot(start, {"shop": shop, "dev": dev}, NAMESPACE),
        ],
        None,
        start + WINDOW,
    )
    store.close()
    return path


def day_of(start: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(start))


def values_of(answer: dict[str, Any]) -> dict[str, int]:
    [period] = answer["periods"]
    return {value["value"]: value["records"] for value in period["values"]}


@pytest.fixture
async def admin(store_path: Path) -> AsyncIterator[str]:
    """The distinct route over the store on a real loopback port, for the two keys."""
    store = SqliteStore(store_path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=SERVICE)
    scope = QueryScope(ROLLUPS, DEFAULT_RETENTION, WINDOW, "unknown", 12, (SERVICE, NAMESPACE))
    app = web.Application()
    add_distinct_route(app, DistinctQueries(store, scope, FakeClock(time.time())).answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1/distinct"
    await runner.cleanup()
    store.close()


async def get(url: str, **params: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as response:
        return response.status, await response.json()


async def test_distinct_answers_the_first_key_unless_key_names_another(
    admin: str, start: float
) -> None:
    day = day_of(start)
    status, first = await get(admin, **{"from": day})
    assert status == 200
    assert (first["attribute_key"], values_of(first)) == (SERVICE, {"checkout": 3})
    status, namespace = await get(admin, **{"from": day, "key": NAMESPACE})
    assert status == 200
    assert (namespace["attribute_key"], values_of(namespace)) == (NAMESPACE, {"shop": 2, "dev": 1})
    # value= is still one value, now of the key asked for.
    status, shop = await get(admin, **{"from": day, "key": NAMESPACE, "value": "shop"})
    assert (status, values_of(shop)) == (200, {"shop": 2})
    status, none = await get(admin, **{"from": day, "value": "shop"})
    assert (status, none["periods"][0]["values"]) == (200, [])


async def test_distinct_refuses_a_key_not_counted_and_names_the_keys(
    admin: str, start: float
) -> None:
    status, body = await get(admin, **{"from": day_of(start), "key": "host.name"})
    assert status == 400
    assert body == {
        "error": f"key='host.name' is not an attribute key counted here; the keys are "
        f"{SERVICE}, {NAMESPACE}"
    }


def query(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "otlp_stats", "query", "--store", f"sqlite://{path}"]
    return subprocess.run(
        [*command, *flags], cwd=REPO, capture_output=True, text=True, timeout=60, check=False
    )


def test_query_cli_takes_key_and_defaults_to_the_first_configured_key(
    store_path: Path, start: float
) -> None:
    day = day_of(start)
    first = query(store_path, "--attribute-key", SERVICE, "--from", day, "--json")
    assert first.returncode == 0, first.stderr
    assert values_of(json.loads(first.stdout)) == {"checkout": 3}
    # Any key the store holds may be asked for, configured or not.
    other = query(store_path, "--attribute-key", SERVICE, "--key", NAMESPACE, "--from", day)
    assert other.returncode == 0, other.stderr
    assert "shop" in other.stdout and "checkout" not in other.stdout


def test_query_cli_without_settings_names_the_keys_the_store_holds(
    store_path: Path, start: float
) -> None:
    day = day_of(start)
    # No --attribute-key: the configured default (service.name) is not in the store, which
    # holds two keys: none is guessed.
    unnamed = query(store_path, "--from", day)
    assert unnamed.returncode == 2 and unnamed.stdout == ""
    assert unnamed.stderr == (
        f"otlp-stats query: the store holds the attribute keys {NAMESPACE}, {SERVICE}, "
        "not service.name: name one with --key\n"
    )
    unknown = query(store_path, "--from", day, "--key", "host.name")
    assert unknown.returncode == 2
    assert unknown.stderr == (
        "otlp-stats query: key='host.name' is not an attribute key counted here; the keys "
        f"are service.name, {NAMESPACE}, {SERVICE}\n"
    )
    named = query(store_path, "--from", day, "--key", NAMESPACE, "--json")
    assert named.returncode == 0, named.stderr
    assert json.loads(named.stdout)["attribute_key"] == NAMESPACE
