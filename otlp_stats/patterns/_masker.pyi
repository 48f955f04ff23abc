# Type stub for the C extension built from _masker.c.

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

T = TypeVar("T")

def mask(message: bytes, max_tokens: int, max_length: int, /) -> bytes: ...
def mask_groups(
    columns: Sequence[Sequence[Hashable]],
    messages: Sequence[str | None],
    max_tokens: int,
    max_length: int,
    make: Callable[[str, int, str], T],
    /,
) -> tuple[dict[tuple[Hashable, ...], list[T]], int, int]:
    """Per key (a record's values in the columns, as a tuple; columns and messages in step, one
    value per record), its records' patterns, each once as make(pattern, records, example) in
    the order each first came: a message masked by the built-in rules within the bounds
    (`<empty>` when nothing is left), None `<null>` with an empty example; the example is the
    smallest message by UTF-8 bytes. With it, the records whose pattern was cut at max_tokens
    and at max_length."""

def mask_cuts(message: bytes, max_tokens: int, max_length: int, /) -> tuple[bytes, int]: ...
