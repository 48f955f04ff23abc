"""Bearer-token authentication: the accepted tokens, read from a file, checked in constant time.

Transport edges (grpc_auth.py, http_auth.py) hand over the `authorization` header's value and
translate the Unauthenticated this raises. Tokens never reach a log line or an error message.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from pathlib import Path

from prometheus_client import Counter

from otlp_stats.errors import Unauthenticated

# RFC 6750 b64token: what can follow "Bearer " in a header, so what a usable token looks like.
_TOKEN = re.compile(r"[A-Za-z0-9\-._~+/]+=*")


class CredentialsError(RuntimeError):
    """A token file or certificate cannot be used; the message names the file, never a secret."""


def read_token_file(path: Path) -> tuple[bytes, ...]:
    """Accepted tokens, one a line; blank lines and `#` comments are skipped."""
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise CredentialsError(f"cannot read token file {path}: {error}") from None
    tokens = []
    for number, line in enumerate(lines, start=1):
        token = line.strip()
        if not token or token.startswith("#"):
            continue
        if not _TOKEN.fullmatch(token):
            raise CredentialsError(f"{path} line {number}: not a bearer token (RFC 6750 b64token)")
        tokens.append(token.encode())
    if not tokens:
        raise CredentialsError(f"token file {path} holds no token")
    return tuple(tokens)


def _digest(token: bytes) -> bytes:
    # Comparing fixed-length digests keeps even the token's length out of the timing.
    return hashlib.sha256(token).digest()


class BearerTokens:
    """The tokens accepted right now; `reload()` swaps in the file's current set at once."""

    def __init__(self, path: Path, refused: Counter) -> None:
        self.path = path
        self._refused = refused
        self._digests: tuple[bytes, ...] = ()

    def reload(self) -> int:
        """Read the file again; on error the tokens accepted so far stay. Returns their count."""
        self._digests = tuple(_digest(token) for token in read_token_file(self.path))
        return len(self._digests)

    def check(self, authorization: str | None, transport: str) -> None:
        """Pass a valid `Bearer <token>` header value; otherwise count why and raise."""
        try:
            self._check(authorization)
        except Unauthenticated as refusal:
            self._refused.labels(transport, refusal.reason).inc()
            raise

    def _check(self, authorization: str | None) -> None:
        if authorization is None or not authorization.strip():
            raise Unauthenticated("missing")
        scheme, _, credentials = authorization.strip().partition(" ")
        # RFC 7235: the scheme is case-insensitive.
        if scheme.lower() != "bearer" or not credentials.strip():
            raise Unauthenticated("malformed")
        offered = _digest(credentials.strip().encode("utf-8", "surrogateescape"))
        # Every accepted token is compared, so the time taken says nothing of which one matched.
        matched = False
        for digest in self._digests:
            matched |= hmac.compare_digest(offered, digest)
        if not matched:
            raise Unauthenticated("invalid")
