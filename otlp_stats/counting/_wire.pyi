# Type stub for the C extension built from _wire.c.

from typing import final

from otlp_stats.patterns.tally import PatternCount

class MalformedWire(ValueError): ...

@final
class Scan:
    @property
    def records(self) -> int: ...
    @property
    def pattern_cuts(self) -> tuple[int, int]: ...
    def add_pattern_cuts(self, cuts: int, records: int, /) -> None: ...

def check(
    wire: bytes,
    key: bytes | tuple[bytes, ...],
    times: bool = False,
    patterns: tuple[int, int, bool] | None = None,
    /,
) -> Scan: ...
def select_key(scan: Scan, index: int, /) -> None: ...
def tally(
    scan: Scan, /
) -> tuple[
    list[tuple[bytes | None, int, bytes | None]],
    list[tuple[int, bytes]],
    list[list[PatternCount]],
    list[tuple[int, bytes, int]],
]: ...
def tally_keys(
    scan: Scan, /
) -> list[
    tuple[
        list[tuple[bytes | None, int, bytes | None]],
        list[tuple[int, bytes]],
        list[list[PatternCount]],
        list[tuple[int, bytes, int]],
    ]
]: ...
def tally_windows(
    scan: Scan, arrival_ns: int, window_ns: int, max_skew_ns: int, /
) -> tuple[
    list[tuple[int, bytes | None, int, bytes | None]],
    list[tuple[int, bytes]],
    int,
    int,
    list[list[PatternCount]],
    list[tuple[int, bytes, int]],
]: ...

@final
class ThetaSet:
    def __init__(self, lg_k: int) -> None: ...
    def add(self, sketch: bytes, /) -> bool: ...
    def compact(self) -> bytes: ...
    def __len__(self) -> int: ...
