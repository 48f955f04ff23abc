"""A real redis-server (Debian's package) on a free loopback port, stopped and started at will."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import redis


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class RedisTls:
    """TLS only (`--port 0`), with a password: as managed Redis services run it."""

    cert: Path
    key: Path
    ca: Path
    password: str


class RedisServer:
    """No persistence by default: a restart comes back empty, the harshest case for the
    replicas. `appendfsync` ("everysec", "always"): AOF on, as --durability ack wants it."""

    def __init__(
        self, directory: Path, tls: RedisTls | None = None, appendfsync: str | None = None
    ) -> None:
        self.port = free_port()
        self._directory = directory
        self._tls = tls
        self._appendfsync = appendfsync
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        if self._tls is None:
            return f"redis://127.0.0.1:{self.port}/0"
        return f"rediss://:{self._tls.password}@127.0.0.1:{self.port}/0?ssl_ca_certs={self._tls.ca}"

    def _listen_flags(self) -> list[str]:
        if self._tls is None:
            return ["--port", str(self.port)]
        tls = self._tls
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(tls.cert),
            "--tls-key-file", str(tls.key),
            "--tls-ca-cert-file", str(tls.ca),
            "--tls-auth-clients", "no",
            "--requirepass", tls.password,
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> None:
        executable = shutil.which("redis-server")
        assert executable, "redis-server is missing: make system-deps installs it"
        command = [executable, *self._listen_flags(), "--bind", "127.0.0.1"]
        command += ["--save", "", "--dir", str(self._directory)]
        if self._appendfsync is None:
            command += ["--appendonly", "no"]
        else:
            command += ["--appendonly", "yes", "--appendfsync", self._appendfsync]
        self._process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        client = redis.Redis.from_url(self.url, socket_timeout=1)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.05)
        client.close()

    def stop(self) -> None:
        if self._process is not None and self._process.poll() is None:
            self._process.terminate()
            self._process.wait(10)
        self._process = None
