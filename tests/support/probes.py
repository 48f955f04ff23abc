"""A snippet of Python run in a fresh interpreter: for what a process decides once, at start."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Mapping
from typing import Any


def probe_json(source: str, *args: str, env: Mapping[str, str]) -> Any:
    """Run `source` with `args` in a new interpreter and `env`; the JSON it printed."""
    result = subprocess.run(
        [sys.executable, "-c", source, *args],
        env=dict(env),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(result.stdout)
