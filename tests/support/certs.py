"""Real X.509 credentials made in the test: a CA, a server and client it signed, and impostors."""

from __future__ import annotations

import datetime
import ipaddress
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

_DAY = datetime.timedelta(days=1)


@dataclass(frozen=True)
class Identity:
    """A certificate and its key, as PEM files."""

    cert: Path
    key: Path

    def read(self) -> tuple[bytes, bytes]:
        return self.cert.read_bytes(), self.key.read_bytes()


@dataclass(frozen=True)
class Credentials:
    ca: Path  # the CA the service and good clients trust
    server: Identity  # for 127.0.0.1 and localhost, signed by `ca`
    client: Identity  # signed by `ca`
    expired_client: Identity  # signed by `ca`, validity over yesterday
    stranger_ca: Path  # another CA, trusted by nobody here
    stranger_client: Identity  # signed by `stranger_ca`


class _Authority:
    def __init__(self, name: str) -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            _builder(self.name, self.name, self.key.public_key(), now - _DAY, now + _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(_key_usage(cert_sign=True), critical=True)
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False
            )
            .sign(self.key, hashes.SHA256())
        )

    def issue(self, name: str, *, server: bool, expired: bool = False) -> tuple[bytes, bytes]:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        start, end = (now - 3 * _DAY, now - 2 * _DAY) if expired else (now - _DAY, now + _DAY)
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            _builder(subject, self.name, key.public_key(), start, end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(_key_usage(cert_sign=False), critical=True)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if server:
            builder = builder.add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
        cert = builder.sign(self.key, hashes.SHA256())
        return _pem_cert(cert), _pem_key(key)

    @property
    def pem(self) -> bytes:
        return _pem_cert(self.cert)


def _builder(
    subject: x509.Name,
    issuer: x509.Name,
    public_key: ec.EllipticCurvePublicKey,
    start: datetime.datetime,
    end: datetime.datetime,
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
    )


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    # Strict verifiers (OpenSSL's X509_STRICT, urllib3 2) want key usage on every certificate.
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def make_credentials(directory: Path) -> Credentials:
    ca, stranger = _Authority("otlp-stats test CA"), _Authority("stranger CA")

    def write(name: str, pem: tuple[bytes, bytes]) -> Identity:
        identity = Identity(directory / f"{name}.crt", directory / f"{name}.key")
        identity.cert.write_bytes(pem[0])
        identity.key.write_bytes(pem[1])
        identity.key.chmod(0o600)
        return identity

    (directory / "ca.crt").write_bytes(ca.pem)
    (directory / "stranger-ca.crt").write_bytes(stranger.pem)
    return Credentials(
        ca=directory / "ca.crt",
        server=write("server", ca.issue("otlp-stats", server=True)),
        client=write("client", ca.issue("collector", server=False)),
        expired_client=write("expired", ca.issue("collector", server=False, expired=True)),
        stranger_ca=directory / "stranger-ca.crt",
        stranger_client=write("stranger", stranger.issue("intruder", server=False)),
    )
