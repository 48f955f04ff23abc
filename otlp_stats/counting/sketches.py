"""Distinct counting in bounded memory: a theta sketch, exact below k hashes, mergeable.

Apache DataSketches' theta sketch keeps every hash while it holds fewer than k (exact mode;
in practice until its table first rebuilds, near 1.9k, and the report says which it is);
past that it keeps the k smallest and estimates, with a relative standard error of about
1/sqrt(k): 1.6% for the default k = 4096, so the ~95% bounds are within about +-3.1%.
Its memory is at most about 2k 8-byte entries (64 KiB at k = 4096) however many hashes it sees.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import datasketches

try:
    from otlp_stats.counting._wire import ThetaSet
except ImportError:  # built without a C compiler: every sketch goes to the union
    ThetaSet = None  # type: ignore[assignment,misc]

DEFAULT_LG_K = 12
# Two standard deviations: the bounds hold with about 95% confidence.
_BOUND_STDDEVS = 2


@dataclass(frozen=True)
class DistinctEstimate:
    value: int
    estimated: bool
    lower_bound: int
    upper_bound: int

    @classmethod
    def exact(cls, count: int) -> DistinctEstimate:
        return cls(count, False, count, count)


class DistinctCounter:
    """Distinct signed 64-bit hashes seen; exact below 2**lg_k of them (at least).

    Hashes come in two ways: one by one (`update`, an update sketch), or already made into a
    serialized compact sketch (`merge`, unioned in: how the C scanner hands over a request's
    hashes, and how a checkpoint is restored as the `base`). Reading unions the two.

    Merged sketches go first to an exact set (_wire.ThetaSet) while they are exact and hold at
    most 1.75k hashes in all: the union would hold exactly those hashes (it first drops some
    past 1.875k), and the set takes a request's sorted hashes at a fraction of the union's cost
    per hash. Past that, the union takes the set's hashes, then every sketch after them.
    """

    __slots__ = ("_exact", "_lg_k", "_sketch", "_union")

    def __init__(self, lg_k: int = DEFAULT_LG_K, base: bytes | None = None) -> None:
        self._lg_k = lg_k
        # Both made on first use: most values see only one of the two ways in.
        self._sketch: datasketches.update_theta_sketch | None = None
        self._union: datasketches.theta_union | None = None
        # Merged sketches while they are exact, below k hashes; None once the union took over.
        self._exact: ThetaSet | None = None if ThetaSet is None else ThetaSet(lg_k)
        if base is not None:
            self.merge(base)

    def update(self, hashes: Iterable[int]) -> None:
        if self._sketch is None:
            # datasketches' update() takes an int as int64: a hash >= 2**63 would take its
            # float path and collide, which is why message hashes are signed
            # (messages.to_signed64).
            self._sketch = datasketches.update_theta_sketch(self._lg_k)
        # map() drained by a zero-length deque calls update() from C, without a Python-level
        # loop per hash: about half the cost of a for loop.
        deque(map(self._sketch.update, hashes), maxlen=0)

    def merge(self, compact: bytes) -> None:
        """Add the hashes of a serialized compact theta sketch (default seed)."""
        exact = self._exact
        if exact is not None and exact.add(compact):
            return
        if self._union is None:
            # The set's hashes first (the union as it would be had it taken every sketch),
            # and from now on every sketch to the union.
            self._union = self._exact_union()
            self._exact = None
        self._union.update(datasketches.compact_theta_sketch.deserialize(compact))

    def _exact_union(self) -> datasketches.theta_union:
        """A new union holding the exact set's hashes."""
        union = datasketches.theta_union(self._lg_k)
        if self._exact:
            union.update(datasketches.compact_theta_sketch.deserialize(self._exact.compact()))
        return union

    def _merged(self) -> datasketches.theta_union | None:
        """What merge() took, as a union; None if it took nothing."""
        if self._union is None and self._exact:
            return self._exact_union()
        return self._union

    def estimate(self) -> DistinctEstimate:
        return estimate_of(self.compact())

    def compact(self) -> datasketches.compact_theta_sketch:
        merged = self._merged()
        if merged is None:
            if self._sketch is None:
                return datasketches.update_theta_sketch(self._lg_k).compact()
            return self._sketch.compact()
        if self._sketch is None:
            return merged.get_result()
        # A fresh union, so that reading twice does not feed the update sketch in twice.
        union = datasketches.theta_union(self._lg_k)
        union.update(merged.get_result())
        union.update(self._sketch)
        return union.get_result()

    def serialize(self) -> bytes:
        """The counter as a compact sketch's bytes: what stores keep and replicas exchange."""
        return bytes(self.compact().serialize())

    @property
    def memory_bytes(self) -> int:
        """Retained entries x 8 bytes: what the sketches hold, for the memory gauge."""
        retained = 0 if self._sketch is None else int(self._sketch.num_retained)
        if self._union is not None:
            retained += int(self._union.get_result().num_retained)
        elif self._exact is not None:
            retained += len(self._exact)
        return retained * 8


def estimate_of(sketch: datasketches.theta_sketch) -> DistinctEstimate:
    if not sketch.is_estimation_mode():
        return DistinctEstimate.exact(int(sketch.get_estimate()))
    return DistinctEstimate(
        value=round(sketch.get_estimate()),
        estimated=True,
        lower_bound=int(sketch.get_lower_bound(_BOUND_STDDEVS)),
        upper_bound=-int(-sketch.get_upper_bound(_BOUND_STDDEVS) // 1),
    )


def union_estimate(
    counters: Iterable[DistinctCounter], lg_k: int = DEFAULT_LG_K
) -> DistinctEstimate:
    """Distinct hashes across several counters (a message under two values counts once)."""
    union = datasketches.theta_union(lg_k)
    for counter in counters:
        union.update(counter.compact())
    return estimate_of(union.get_result())


def union_serialized(blobs: Iterable[bytes], lg_k: int = DEFAULT_LG_K) -> bytes:
    """The union of serialized compact sketches, serialized: how windows merge into periods."""
    union = datasketches.theta_union(lg_k)
    for blob in blobs:
        union.update(datasketches.compact_theta_sketch.deserialize(blob))
    return bytes(union.get_result().serialize())


def estimate_serialized(blob: bytes) -> DistinctEstimate:
    return estimate_of(datasketches.compact_theta_sketch.deserialize(blob))
