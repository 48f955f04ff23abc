"""DistinctCounter: its exact set (_wire.ThetaSet) gives what the DataSketches union alone gave."""

from __future__ import annotations

import random

import datasketches
import pytest

from otlp_stats.counting._wire import ThetaSet
from otlp_stats.counting.sketches import DistinctCounter


def _compact(hashes: list[int], lg_k: int) -> bytes:
    sketch = datasketches.update_theta_sketch(lg_k)
    for value in hashes:
        sketch.update(value)
    return bytes(sketch.compact().serialize())


def _union_alone(blobs: list[bytes], lg_k: int, updates: list[int]) -> bytes:
    """What DistinctCounter serialized before it had an exact set."""
    union = datasketches.theta_union(lg_k)
    for blob in blobs:
        union.update(datasketches.compact_theta_sketch.deserialize(blob))
    if not updates:
        return bytes(union.get_result().serialize())
    sketch = datasketches.update_theta_sketch(lg_k)
    for value in updates:
        sketch.update(value)
    both = datasketches.theta_union(lg_k)
    both.update(union.get_result())
    both.update(sketch)
    return bytes(both.get_result().serialize())


@pytest.mark.parametrize("seed", range(40))
def test_merged_sketches_serialize_as_the_union_alone_did(seed: int) -> None:
    # Small k, so that values cross the set's limit (1.75k) and the union's first rebuild
    # (1.875k), with sketches of another k and in estimation mode among them.
    rng = random.Random(seed)
    lg_k = rng.choice([5, 6, 8])
    pool = [rng.randrange(-(2**63), 2**63) for _ in range(rng.choice([20, 300, 5000]))]
    blobs = [
        _compact(rng.sample(pool, rng.randrange(0, min(len(pool), 400))), rng.choice([lg_k, 12]))
        for _ in range(rng.randrange(1, 30))
    ]
    updates = [rng.choice(pool) for _ in range(rng.choice([0, 3]))]
    counter = DistinctCounter(lg_k)
    for blob in blobs:
        counter.merge(blob)
    if updates:
        counter.update(updates)
    expected = _union_alone(blobs, lg_k, updates)
    assert counter.serialize() == expected
    assert counter.serialize() == expected  # reading leaves the counter as it was


def test_the_set_takes_exact_sketches_up_to_its_limit_and_nothing_of_a_refused_one() -> None:
    exact = ThetaSet(5)  # 2k = 64 slots: at most 56 hashes
    assert exact.add(_compact(list(range(50)), 5))
    assert len(exact) == 50
    assert not exact.add(_compact(list(range(100, 110)), 5))  # would pass 56
    assert len(exact) == 50
    # Counted as new whether or not they are: 16 (6 of them new) would pass 56.
    assert not exact.add(_compact(list(range(40, 56)), 5))
    assert exact.add(_compact(list(range(50, 56)), 5))
    assert len(exact) == 56
    estimated = _compact(list(range(1000)), 5)
    assert not exact.add(estimated)
    assert not exact.add(b"not a sketch")
    assert len(exact) == 56


def test_a_counter_of_merged_sketches_reports_exact_counts_and_memory() -> None:
    counter = DistinctCounter(12)
    counter.merge(_compact(list(range(300)), 12))
    counter.merge(_compact(list(range(200, 500)), 12))
    estimate = counter.estimate()
    assert (estimate.value, estimate.estimated) == (500, False)
    assert counter.memory_bytes == 500 * 8
