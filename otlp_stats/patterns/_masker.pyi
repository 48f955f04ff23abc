# Type stub for the C extension built from _masker.c.

from collections.abc import Callable, Hashable, Sequence
from typing import TypeVar

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")

def mask(message: bytes, max_tokens: int, max_length: int, /) -> bytes: ...
def mask_groups(
    keys: Sequence[K],
    messages: Sequence[str | None],
    max_tokens: int,
    max_length: int,
    make: Callable[[str, int, str], T],
    /,
) -> dict[K, list[T]]:
    """Per key (keys and messages in step, one per record), its records' patterns, each once as
    make(pattern, records, example) in the order each first came: a message masked by the
    built-in rules within the bounds (`<empty>` when nothing is left), None `<null>` with an
    empty example; the example is the smallest message by UTF-8 bytes."""
