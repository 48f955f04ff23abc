"""Container HEALTHCHECK: exit 0 if the admin port's /health answers 200, 1 otherwise.

Reads the same OTLP_STATS_ADMIN_LISTEN the service reads, so moving the admin port moves the
probe with it; a wildcard listen address is probed on loopback. Standard library only: the
runtime image carries nothing the service does not need.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request

DEFAULT_ADMIN_LISTEN = "0.0.0.0:9464"
WILDCARDS = {"0.0.0.0", "::", ""}


def health_url(admin_listen: str) -> str:
    host, _, port = admin_listen.strip().rpartition(":")
    host = host.strip("[]")
    if host in WILDCARDS:
        host = "127.0.0.1" if host != "::" else "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}/health"


def main() -> int:
    url = health_url(os.environ.get("OTLP_STATS_ADMIN_LISTEN", DEFAULT_ADMIN_LISTEN))
    try:
        with urllib.request.urlopen(url, timeout=3) as response:
            return 0 if response.status == 200 else 1
    except (urllib.error.URLError, OSError) as error:
        print(f"healthcheck: {url}: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
