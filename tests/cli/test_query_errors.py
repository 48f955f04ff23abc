"""`otlp-stats query` when the store cannot answer: a non-zero exit and one line on stderr
saying why, never a traceback, through the real command."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import time
from contextlib import closing
from pathlib import Path

from tests.support.redistools import free_port

REPO = Path(__file__).resolve().parents[2]


def _query(store: str) -> subprocess.CompletedProcess[str]:
    today = time.strftime("%Y-%m-%d", time.gmtime())
    return subprocess.run(
        [sys.executable, "-m", "otlp_stats", "query", "--store", store, "--from", today],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _one_line(stderr: str) -> str:
    assert "Traceback" not in stderr
    [line] = stderr.splitlines()
    assert line.startswith("otlp-stats query: ")
    return line


def test_unreachable_redis_is_one_line_and_exit_3() -> None:
    port = free_port()  # nothing listens there
    result = _query(f"redis://:secret@127.0.0.1:{port}/0")
    line = _one_line(result.stderr)
    assert result.returncode == 3
    assert line.startswith("otlp-stats query: the store cannot be read:")
    assert f"127.0.0.1:{port}" in line and "secret" not in line
    assert result.stdout == ""


def test_missing_sqlite_file_is_one_line_and_exit_1(tmp_path: Path) -> None:
    missing = tmp_path / "gone" / "state.db"
    result = _query(f"sqlite://{missing}")
    line = _one_line(result.stderr)
    assert result.returncode == 1
    assert f"no store at {missing}" in line
    assert not missing.parent.exists()


def test_a_file_that_is_no_database_is_one_line_and_exit_1(tmp_path: Path) -> None:
    junk = tmp_path / "state.db"
    junk.write_text("not sqlite\n" * 100)
    result = _query(f"sqlite://{junk}")
    assert "no store at" in _one_line(result.stderr)
    assert result.returncode == 1


def test_a_database_of_another_shape_fails_the_read_in_one_line_and_exit_3(
    tmp_path: Path,
) -> None:
    # A `periods` table passes the check on opening; the query's columns are not there.
    other = tmp_path / "state.db"
    with closing(sqlite3.connect(other)) as db:
        db.execute("CREATE TABLE periods (x INTEGER)")
        db.commit()
    result = _query(f"sqlite://{other}")
    line = _one_line(result.stderr)
    assert result.returncode == 3
    assert line.startswith("otlp-stats query: the store cannot be read:")
