# Type stub for the C extension built from _wire.c.

from typing import final

class MalformedWire(ValueError): ...

@final
class Scan:
    @property
    def records(self) -> int: ...

def check(wire: bytes, key: bytes, /) -> Scan: ...
def tally(
    scan: Scan, /
) -> tuple[list[tuple[bytes | None, int, bytes | None]], list[tuple[int, bytes]]]: ...
