"""The extractor: messages -> their final patterns, masked one by one, then merged as a set."""

from __future__ import annotations

from collections.abc import Sequence

from otlp_stats.patterns.masker import Masker
from otlp_stats.patterns.merge import DEFAULT_SIMILARITY, merge_patterns


class PatternExtractor:
    """Masks each message, then merges the masked set: what `otlp-stats pattern` prints."""

    def __init__(self, masker: Masker | None = None, similarity: float = DEFAULT_SIMILARITY):
        self.masker = masker if masker is not None else Masker()
        self.similarity = similarity

    def final_patterns(self, messages: Sequence[str]) -> list[str]:
        """Each message's final pattern, in the messages' order."""
        masked = [self.masker.mask(message) for message in messages]
        final = merge_patterns(masked, self.similarity)
        return [final[pattern] for pattern in masked]
