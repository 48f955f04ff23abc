"""TLS and mutual TLS for the listening ports, from PEM files named in the settings."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path

import grpc

from otlp_stats.config import Settings
from otlp_stats.receiving.auth import CredentialsError


@dataclass(frozen=True)
class ServerTls:
    """A server certificate and key, and the CA bundle client certificates must chain to."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None

    @property
    def mutual(self) -> bool:
        return self.client_ca_file is not None

    def grpc_credentials(self) -> grpc.ServerCredentials:
        client_ca = None if self.client_ca_file is None else _read(self.client_ca_file)
        return grpc.ssl_server_credentials(
            [(_read(self.key_file), _read(self.cert_file))],
            root_certificates=client_ca,
            require_client_auth=self.mutual,
        )

    def ssl_context(self, *, verify_clients: bool = True) -> ssl.SSLContext:
        """For aiohttp; `verify_clients=False` serves the certificate without asking for one."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.cert_file, self.key_file)
            if verify_clients and self.client_ca_file is not None:
                context.load_verify_locations(cafile=self.client_ca_file)
                context.verify_mode = ssl.CERT_REQUIRED
        except (OSError, ValueError) as error:
            # ssl.SSLError is an OSError; its text names the problem, not the key material.
            raise CredentialsError(f"cannot load TLS certificate or key: {error}") from None
        return context


def server_tls(settings: Settings) -> ServerTls | None:
    """The TLS the settings ask for, checked by loading it once; None for plaintext."""
    if settings.tls_cert_file is None or settings.tls_key_file is None:
        return None
    tls = ServerTls(settings.tls_cert_file, settings.tls_key_file, settings.tls_client_ca_file)
    tls.ssl_context()  # fails here, at start, on a bad PEM or a key that does not match
    return tls


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise CredentialsError(f"cannot read {path}: {error}") from None
