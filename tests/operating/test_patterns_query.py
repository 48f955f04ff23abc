"""GET /v1/patterns and `otlp-stats query --patterns`: each value's top patterns over the stored
periods asked for (their tables merged, then the similarity merge), and clear refusals."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import closing
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from otlp_stats.counting.aggregator import Aggregator, LabelTally, WindowSnapshot
from otlp_stats.operating.admin import add_patterns_route
from otlp_stats.operating.pattern_query import PatternQueries, render_patterns_table
from otlp_stats.operating.query import QueryScope
from otlp_stats.patterns.tally import PatternCount
from otlp_stats.store.periods import DEFAULT_RETENTION
from otlp_stats.store.sqlite import SqliteStore
from tests.support.fakes import FakeClock

REPO = Path(__file__).resolve().parents[2]
KEY = "svc"
WINDOW = 10.0
ROLLUPS = ("1d",)


def window(start: float, patterns: dict[str | None, list[tuple[str, int, str]]]) -> WindowSnapshot:
    """A closed window of key `svc` whose values hold these patterns (records: theirs)."""
    aggregator = Aggregator(WINDOW, start, keep_sketches=True)
    batch = {
        value: LabelTally.of_hashes(list(range(sum(records for _, records, _ in table))))
        for value, table in patterns.items()
    }
    aggregator.add(start + 1, batch)
    [report] = aggregator.close_until(start + WINDOW)
    assert report.snapshot is not None
    tallies = tuple(
        replace(tally, patterns=tuple(PatternCount(*c) for c in patterns[tally.value]))
        for tally in report.snapshot.tallies
    )
    return replace(report.snapshot, tallies=tallies, attribute_key=KEY)


@pytest.fixture
def start() -> float:
    """Two closed windows a few minutes ago, within every retention, on one day."""
    start = (time.time() - 300) // WINDOW * WINDOW
    if time.gmtime(start).tm_yday != time.gmtime(start + 2 * WINDOW).tm_yday:
        start -= 3 * WINDOW  # just after midnight: keep both windows in one day
    return start


@pytest.fixture
def store_path(tmp_path: Path, start: float) -> Path:
    """Checkout logs payments in both windows, logins of two users only in the second (one
    pattern after the similarity merge), and a deploy once; search logs one pattern."""
    path = tmp_path / "state.db"
    store = SqliteStore(path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=KEY)
    first = window(
        start,
        {
            "checkout": [
                ("payment <*> accepted in <*>ms", 40, "payment 9 accepted in 3ms"),
                ("deploy finished", 1, "deploy finished"),
            ],
            "search": [("query <*> took <*>ms", 5, "query q1 took 4ms")],
        },
    )
    second = window(
        start + WINDOW,
        {
            "checkout": [
                ("payment <*> accepted in <*>ms", 10, "payment 10 accepted in 3ms"),
                ("user alice logged in from <*>", 7, "user alice logged in from 10.0.0.1"),
                ("user bob logged in from <*>", 6, "user bob logged in from 10.0.0.2"),
            ],
        },
    )
    store.commit([first, second], None, start + 2 * WINDOW)
    store.close()
    return path


def day_of(start: float) -> str:
    return time.strftime("%Y-%m-%d", time.gmtime(start))


def instant(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat()


CHECKOUT_TOP_3 = [
    {
        "pattern": "payment <*> accepted in <*>ms",
        "records": 50,
        "example": "payment 10 accepted in 3ms",
    },
    {
        "pattern": "user <*> logged in from <*>",
        "records": 13,
        "example": "user alice logged in from 10.0.0.1",
    },
    {"pattern": "deploy finished", "records": 1, "example": "deploy finished"},
]


@pytest.fixture
async def admin(store_path: Path) -> AsyncIterator[str]:
    """The patterns route over the store on a real loopback port."""
    store = SqliteStore(store_path, ROLLUPS, DEFAULT_RETENTION, WINDOW, first_key=KEY)
    scope = QueryScope(ROLLUPS, DEFAULT_RETENTION, WINDOW, "unknown", 12, (KEY,))
    app = web.Application()
    add_patterns_route(app, PatternQueries(store, scope, FakeClock(time.time())).answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}/v1/patterns"
    await runner.cleanup()
    store.close()


async def get(url: str, **params: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as session, session.get(url, params=params) as response:
        return response.status, await response.json()


async def test_the_top_patterns_of_each_value_over_the_periods_asked_for(
    admin: str, start: float
) -> None:
    status, answer = await get(admin, **{"from": day_of(start)})
    assert status == 200
    assert (answer["attribute_key"], answer["resolution"], answer["top"]) == (KEY, "1d", 3)
    assert (answer["periods"], answer["windows"], answer["complete"]) == (1, 2, False)
    checkout, search = answer["values"]
    assert checkout == {
        "value": "checkout",
        "missing": False,
        "overflow": False,
        "records": 64,
        "pattern_records": 64,
        # Payments, deploys, and the two users' logins as one after the similarity merge.
        "distinct_patterns": 3,
        "top_patterns": CHECKOUT_TOP_3,
    }
    assert (search["value"], search["distinct_patterns"], search["records"]) == ("search", 1, 5)
    # The two base windows asked for at once are merged the same way as their day.
    status, windows = await get(
        admin,
        **{"from": instant(start), "to": instant(start + WINDOW), "resolution": "window"},
    )
    assert status == 200, windows
    assert (windows["periods"], windows["values"]) == (2, answer["values"])


async def test_top_and_value_narrow_the_answer(admin: str, start: float) -> None:
    day = day_of(start)
    status, one = await get(admin, **{"from": day, "value": "checkout", "top": "1"})
    assert status == 200
    [checkout] = one["values"]
    assert (one["top"], checkout["top_patterns"]) == (1, CHECKOUT_TOP_3[:1])
    status, counts_only = await get(admin, **{"from": day, "top": "0"})
    assert [v["top_patterns"] for v in counts_only["values"]] == [[], []]
    assert [v["distinct_patterns"] for v in counts_only["values"]] == [3, 1]
    status, every = await get(admin, **{"from": day, "top": "all", "value": "checkout"})
    assert (status, every["top"], len(every["values"][0]["top_patterns"])) == (200, "all", 3)


@pytest.mark.parametrize(
    ("params", "status", "error"),
    [
        ({"top": "many"}, 400, "top='many' is not a number of patterns (0 or more) or all"),
        ({"top": "-1"}, 400, "top='-1' is not a number of patterns (0 or more) or all"),
        ({"key": "host.name"}, 400, "key='host.name' is not an attribute key counted here"),
        ({"resolution": "1h"}, 400, "resolution='1h': this store keeps window, 1d"),
        ({"from": "2099-01-01"}, 400, "from='2099-01-01' is in the future"),
        ({"from": "2020-01-01"}, 404, "1d periods are kept for 60d"),
        ({"from": None}, 400, "from is required"),
    ],
)
async def test_a_question_the_store_cannot_answer_is_refused_saying_why(
    admin: str, start: float, params: dict[str, str | None], status: int, error: str
) -> None:
    asked = {"from": day_of(start), **params}
    got, body = await get(admin, **{k: v for k, v in asked.items() if v is not None})
    assert got == status
    assert body["error"].startswith(error)


def test_the_table_keeps_each_pattern_on_one_line_and_cuts_long_examples() -> None:
    answer = {
        "values": [
            {
                "value": "checkout",
                "distinct_patterns": 1,
                "records": 2,
                "top_patterns": [{"pattern": "a\tb <*>", "records": 2, "example": "x\n" * 60}],
            }
        ]
    }
    lines = render_patterns_table(answer).splitlines()
    assert len(lines) == 3
    assert lines[1].split() == ["checkout", "1", "2"]
    assert "a\\tb <*>" in lines[2] and lines[2].endswith("...")
    assert len(lines[2].split("a\\tb <*>")[1].strip()) == 80


# --- otlp-stats query --patterns ---------------------------------------------------------------


def query(path: Path, *flags: str) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "otlp_stats", "query", "--store", f"sqlite://{path}"]
    return subprocess.run(
        [*command, "--attribute-key", KEY, *flags],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_query_cli_answers_patterns_as_the_api_does(store_path: Path, start: float) -> None:
    day = day_of(start)
    as_json = query(store_path, "--patterns", "--from", day, "--value", "checkout", "--json")
    assert as_json.returncode == 0, as_json.stderr
    [checkout] = json.loads(as_json.stdout)["values"]
    assert checkout["top_patterns"] == CHECKOUT_TOP_3
    table = query(store_path, "--patterns", "--from", day, "--top", "2")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["value", "patterns", "records", "pattern", "example"]
    assert lines[1].split() == ["checkout", "3", "64"]
    assert lines[2].split()[:2] == ["50", "payment"] and lines[2].endswith("in 3ms")
    assert lines[3].split()[:2] == ["13", "user"]
    assert lines[4].split() == ["search", "1", "5"]
    assert len(lines) == 6


def test_query_cli_refuses_a_bad_top_in_one_line(store_path: Path, start: float) -> None:
    bad = query(store_path, "--patterns", "--from", day_of(start), "--top", "many")
    assert (bad.returncode, bad.stdout) == (2, "")
    assert bad.stderr == (
        "otlp-stats query: top='many' is not a number of patterns (0 or more) or all\n"
    )
    alone = query(store_path, "--from", day_of(start), "--top", "2")
    assert (alone.returncode, alone.stderr) == (2, "otlp-stats query: --top goes with --patterns\n")


def test_a_file_from_before_patterns_answers_its_values_without_patterns(
    store_path: Path, start: float
) -> None:
    """Read-only, as the CLI opens it: the file is not migrated, its records still count."""
    with closing(sqlite3.connect(store_path)) as db:
        for table in ("entries", "open_entries"):
            db.execute(f"ALTER TABLE {table} DROP COLUMN patterns")
        db.commit()
    answer = query(store_path, "--patterns", "--from", day_of(start), "--json")
    assert answer.returncode == 0, answer.stderr
    checkout, search = json.loads(answer.stdout)["values"]
    assert (checkout["records"], checkout["pattern_records"]) == (64, 0)
    assert (checkout["distinct_patterns"], checkout["top_patterns"]) == (0, [])
    assert (search["records"], search["distinct_patterns"]) == (5, 0)
