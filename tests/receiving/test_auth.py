"""Bearer tokens: the file format, the checks, rotation by SIGHUP, and no token in any log."""

from __future__ import annotations

import signal
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry

from otlp_stats.errors import Unauthenticated
from otlp_stats.receiving.auth import BearerTokens, CredentialsError, read_token_file
from otlp_stats.telemetry import Metrics
from tests.support.securetools import ClientSide, export_request
from tests.support.servicetools import metric_value, running_service


def tokens_from(tmp_path: Path, text: str) -> tuple[BearerTokens, Metrics]:
    path = tmp_path / "tokens"
    path.write_text(text)
    metrics = Metrics(CollectorRegistry())
    tokens = BearerTokens(path, metrics.auth_refused)
    tokens.reload()
    return tokens, metrics


def test_every_listed_token_is_accepted_and_comments_are_not(tmp_path: Path) -> None:
    tokens, _ = tokens_from(tmp_path, "# rotation in progress\n\n old-token \nnew-token\n")
    tokens.check("Bearer old-token", "grpc")
    tokens.check("bearer new-token", "http")  # the scheme is case-insensitive
    with pytest.raises(Unauthenticated):
        tokens.check("Bearer # rotation in progress", "grpc")


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (None, "missing"),
        ("", "missing"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer wrong", "invalid"),
        ("Bearer good-token-but-longer", "invalid"),
        ("Bearer \udcff", "invalid"),
    ],
)
def test_a_refusal_is_counted_by_reason_and_never_quotes_the_header(
    tmp_path: Path, header: str | None, reason: str
) -> None:
    tokens, metrics = tokens_from(tmp_path, "good-token\n")
    with pytest.raises(Unauthenticated) as refused:
        tokens.check(header, "http")
    assert refused.value.reason == reason
    assert header is None or not header or header.split()[-1] not in str(refused.value)
    assert metrics.auth_refused.labels("http", reason)._value.get() == 1


@pytest.mark.parametrize("text", ["", "# only a comment\n", "two words\n"])
def test_a_token_file_without_usable_tokens_is_refused(tmp_path: Path, text: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(text)
    with pytest.raises(CredentialsError) as error:
        read_token_file(path)
    assert "words" not in str(error.value)  # names the line, never its content


def test_a_failed_reload_keeps_the_tokens_accepted_so_far(tmp_path: Path) -> None:
    tokens, _ = tokens_from(tmp_path, "kept\n")
    tokens.path.write_text("")
    with pytest.raises(CredentialsError):
        tokens.reload()
    tokens.check("Bearer kept", "grpc")


def test_sighup_rotates_tokens_without_a_restart(tmp_path: Path) -> None:
    token_file = tmp_path / "tokens"
    token_file.write_text("first-token\n")
    with running_service("--auth-token-file", str(token_file)) as service:
        first, second = ClientSide(token="first-token"), ClientSide(token="second-token")
        first.grpc_export(service, export_request("a", "before rotation"))
        assert second.http_export(service, export_request("a", "too early"))[0] == 401

        token_file.write_text("second-token\n")
        service.process.send_signal(signal.SIGHUP)
        assert service.wait_log("credentials_reloaded")["tokens"] == 1

        with pytest.raises(grpc.RpcError) as refused:
            first.grpc_export(service, export_request("a", "after rotation"))
        assert refused.value.code() is grpc.StatusCode.UNAUTHENTICATED
        assert second.http_export(service, export_request("a", "after rotation"))[0] == 200
        _, metrics = service.http_get("/metrics")  # admin auth is off by default
        assert metric_value(metrics, "otlp_stats_records_accepted_total", {}) is not None
        assert service.stop() == 0
    for secret in ("first-token", "second-token"):
        assert secret not in service.stderr_text
