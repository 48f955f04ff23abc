"""Parses `--report-sink` URIs into typed specs; pure, so config validates them at start."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

STDOUT = "stdout"
DEFAULT_FILE_MAX_BYTES = 100 * 1024 * 1024
DEFAULT_FILE_BACKUPS = 5
DEFAULT_RETRIES = 5
DEFAULT_TIMEOUT = 10.0
DEFAULT_STREAM_MAXLEN = 10_000
SCHEMES = (
    "stdout",
    "file",
    "http",
    "https",
    "redis-stream",
    "rediss-stream",
    "otlp+grpc",
    "otlp+http",
)
# redis-py's own names for a rediss:// URL's PEM files, so one spelling serves the store
# (`--store rediss://...?ssl_ca_certs=PATH`, passed to redis-py as written) and the sink.
REDIS_TLS_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")


@dataclass(frozen=True)
class StdoutSpec:
    scheme: str = STDOUT


@dataclass(frozen=True)
class FileSpec:
    path: Path
    max_bytes: int = DEFAULT_FILE_MAX_BYTES
    backups: int = DEFAULT_FILE_BACKUPS
    scheme: str = "file"


@dataclass(frozen=True)
class WebhookSpec:
    url: str
    headers: tuple[tuple[str, str], ...] = ()
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    scheme: str = "https"


@dataclass(frozen=True)
class RedisStreamSpec:
    url: str
    stream: str
    maxlen: int = DEFAULT_STREAM_MAXLEN
    retries: int = DEFAULT_RETRIES
    scheme: str = "redis-stream"


@dataclass(frozen=True)
class OtlpSpec:
    """OTLP metrics: `target` is host:port for gRPC, the full URL for HTTP."""

    transport: str
    target: str
    tls: bool = False
    ca_file: Path | None = None
    token: str | None = None
    retries: int = DEFAULT_RETRIES
    timeout: float = DEFAULT_TIMEOUT
    scheme: str = "otlp+grpc"


SinkSpec = StdoutSpec | FileSpec | WebhookSpec | RedisStreamSpec | OtlpSpec


def split_sink_list(text: str) -> tuple[str, ...]:
    """A comma list (the environment's spelling); a comma inside a URI is written %2C."""
    uris = tuple(part.strip() for part in text.split(",") if part.strip())
    if not uris:
        raise ValueError("must name at least one sink (stdout by default)")
    return uris


def parse_sink_uri(uri: str) -> SinkSpec:
    """The sink a URI names; ValueError says what is wrong (files named are read here)."""
    if uri == STDOUT:
        return StdoutSpec()
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    if scheme == "file":
        return _file_spec(parts.path, params)
    if scheme in ("http", "https"):
        return _webhook_spec(uri, scheme, params)
    if scheme in ("redis-stream", "rediss-stream"):
        return _redis_spec(scheme, parts.netloc, parts.path, params)
    if scheme in ("otlp+grpc", "otlp+grpcs", "otlp+http", "otlp+https"):
        return _otlp_spec(scheme, parts.netloc, parts.path, params)
    raise ValueError(f"unknown sink {_redacted(uri)!r}: the scheme must be one of {SCHEMES}")


def redact(uri: str) -> str:
    """A URI fit for a log line: the password of user:password@ hidden."""
    return _redacted(uri)


def for_log(uri: str) -> str:
    """A URI fit for a log line or an error message: the password hidden, and for a webhook
    the secrets services put in its address too. Slack, Discord and Teams webhooks carry
    their token in the path, others in the query: past the first path segment the path is
    elided and query values are hidden. Only for showing: sinks are told apart by `redact`.
    """
    shown = _redacted(uri)
    parts = urlsplit(shown)
    if parts.scheme.lower() not in ("http", "https"):
        return shown
    segments = parts.path.split("/")
    path = "/".join(segments[:2]) + ("/…" if len(segments) > 2 else "")
    query = "&".join(f"{name}=***" for name, _ in parse_qsl(parts.query, keep_blank_values=True))
    return urlunsplit(parts._replace(path=path, query=query))


def _redacted(uri: str) -> str:
    parts = urlsplit(uri)
    if parts.password is None:
        return uri
    netloc = parts.netloc.replace(":" + parts.password + "@", ":***@", 1)
    return urlunsplit(parts._replace(netloc=netloc))


def _take(params: dict[str, str], known: tuple[str, ...], where: str) -> dict[str, str]:
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise ValueError(f"{where}: unknown parameter(s) {', '.join(unknown)}")
    return params


def _positive_int(params: dict[str, str], name: str, default: int, least: int = 1) -> int:
    if name not in params:
        return default
    try:
        value = int(params[name], 10)
    except ValueError:
        value = least - 1
    if value < least:
        raise ValueError(f"{name}={params[name]!r} must be an integer of at least {least}")
    return value


def _positive_float(params: dict[str, str], name: str, default: float) -> float:
    if name not in params:
        return default
    try:
        value = float(params[name])
    except ValueError:
        value = 0.0
    if not 0 < value < float("inf"):
        raise ValueError(f"{name}={params[name]!r} must be a positive number")
    return value


def _file_spec(path: str, params: dict[str, str]) -> FileSpec:
    _take(params, ("max_bytes", "backups"), "file sink")
    if not path or path.endswith("/"):
        raise ValueError("file sink needs a file path: file:///var/log/otlp-stats/reports.jsonl")
    target = Path(unquote(path))
    if not target.parent.is_dir():
        raise ValueError(f"file sink: no such directory {str(target.parent)!r}")
    return FileSpec(
        target,
        _positive_int(params, "max_bytes", DEFAULT_FILE_MAX_BYTES),
        _positive_int(params, "backups", DEFAULT_FILE_BACKUPS, least=0),
    )


def read_headers(path: Path) -> tuple[tuple[str, str], ...]:
    """`Name: value` lines; blank lines and # comments skipped."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"headers_file {str(path)!r} cannot be read: {error}") from None
    headers = []
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        name, colon, value = line.partition(":")
        if not colon or not name.strip() or any(c.isspace() for c in name.strip()):
            raise ValueError(f"headers_file {str(path)!r} line {number}: not `Name: value`")
        headers.append((name.strip(), value.strip()))
    return tuple(headers)


def read_token(path: Path) -> str:
    try:
        token = path.read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"token_file {str(path)!r} cannot be read: {error}") from None
    if not token:
        raise ValueError(f"token_file {str(path)!r} is empty")
    return token


_WEBHOOK_PARAMS = ("headers_file", "retries", "timeout")


def _webhook_spec(uri: str, scheme: str, params: dict[str, str]) -> WebhookSpec:
    parts = urlsplit(uri)
    if not parts.hostname:
        raise ValueError(f"webhook sink {_redacted(uri)!r} has no host")
    # The webhook's own query parameters stay in its URL; ours are taken out.
    kept = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    url = urlunsplit(
        parts._replace(query=urlencode([kv for kv in kept if kv[0] not in _WEBHOOK_PARAMS]))
    )
    ours = {k: v for k, v in params.items() if k in _WEBHOOK_PARAMS}
    headers = read_headers(Path(ours["headers_file"])) if "headers_file" in ours else ()
    return WebhookSpec(
        url,
        headers,
        _positive_int(ours, "retries", DEFAULT_RETRIES, least=0),
        _positive_float(ours, "timeout", DEFAULT_TIMEOUT),
        scheme,
    )


def _redis_spec(scheme: str, netloc: str, path: str, params: dict[str, str]) -> RedisStreamSpec:
    tls = scheme == "rediss-stream"
    known = ("stream", "maxlen", "retries") + (REDIS_TLS_FILES if tls else ())
    _take(params, known, f"{scheme} sink")
    if not params.get("stream"):
        raise ValueError(f"{scheme} sink needs ?stream=NAME")
    if not netloc:
        raise ValueError(f"{scheme} sink needs a host: {scheme}://host:6379/0?stream=NAME")
    db = path.strip("/") or "0"
    if not db.isdigit():
        raise ValueError(f"{scheme} sink: database {db!r} must be a number")
    files = {name: params[name] for name in REDIS_TLS_FILES if params.get(name)}
    _check_files(files)
    query = f"?{urlencode(files)}" if files else ""
    return RedisStreamSpec(
        f"{'rediss' if tls else 'redis'}://{netloc}/{db}{query}",
        params["stream"],
        _positive_int(params, "maxlen", DEFAULT_STREAM_MAXLEN),
        _positive_int(params, "retries", DEFAULT_RETRIES, least=0),
        scheme,
    )


def check_redis_tls_files(url: str) -> None:
    """The PEM files a rediss:// URL names exist: a typo fails at start, not at first use."""
    params = dict(parse_qsl(urlsplit(url).query, keep_blank_values=True))
    _check_files({name: params[name] for name in REDIS_TLS_FILES if name in params})


def _check_files(files: dict[str, str]) -> None:
    for name, path in files.items():
        if not Path(path).is_file():
            raise ValueError(f"{name}={path!r}: no such file")


def _otlp_spec(scheme: str, netloc: str, path: str, params: dict[str, str]) -> OtlpSpec:
    _take(params, ("tls", "ca_file", "token_file", "retries", "timeout"), "otlp sink")
    if not netloc:
        raise ValueError(f"{scheme} sink needs host:port")
    transport = "grpc" if scheme.startswith("otlp+grpc") else "http"
    ca_file = Path(params["ca_file"]) if params.get("ca_file") else None
    if ca_file is not None and not ca_file.is_file():
        raise ValueError(f"ca_file {str(ca_file)!r}: no such file")
    # A CA to verify the server with only means something over TLS.
    tls = (
        scheme.endswith("s")
        or params.get("tls", "false").lower() in ("1", "true", "yes")
        or ca_file is not None
    )
    token = read_token(Path(params["token_file"])) if params.get("token_file") else None
    if transport == "grpc":
        target = netloc
    else:
        target = f"{'https' if tls else 'http'}://{netloc}{path or '/v1/metrics'}"
    return OtlpSpec(
        transport,
        target,
        tls,
        ca_file,
        token,
        _positive_int(params, "retries", DEFAULT_RETRIES, least=0),
        _positive_float(params, "timeout", DEFAULT_TIMEOUT),
        f"otlp+{transport}",
    )
