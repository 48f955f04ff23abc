"""Calendar periods (UTC) that closed windows roll up into, and how long each is kept."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

# "window" is the base resolution: the tumbling windows themselves.
BASE = "window"
ROLLUPS = ("1m", "1h", "1d", "1mo")
RESOLUTIONS = (BASE, *ROLLUPS)


def _moment(seconds: float) -> datetime:
    return datetime.fromtimestamp(seconds, tz=UTC)


def _add_months(moment: datetime, months: int) -> datetime:
    total = moment.year * 12 + moment.month - 1 + months
    return moment.replace(year=total // 12, month=total % 12 + 1, day=1)


def period_bounds(resolution: str, seconds: float) -> tuple[float, float]:
    """The [start, end) of the calendar period of `resolution` that holds the instant."""
    moment = _moment(seconds)
    if resolution == "1m":
        start = moment.replace(second=0, microsecond=0)
        end = start + timedelta(minutes=1)
    elif resolution == "1h":
        start = moment.replace(minute=0, second=0, microsecond=0)
        end = start + timedelta(hours=1)
    elif resolution == "1d":
        start = moment.replace(hour=0, minute=0, second=0, microsecond=0)
        end = start + timedelta(days=1)
    elif resolution == "1mo":
        start = moment.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        end = _add_months(start, 1)
    else:
        raise ValueError(f"unknown rollup resolution {resolution!r}")
    return start.timestamp(), end.timestamp()


_SPAN_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Span:
    """A retention: a count of seconds, minutes, hours, days, or calendar months."""

    amount: int
    unit: str

    def __str__(self) -> str:
        return f"{self.amount}{self.unit}"

    def before(self, seconds: float) -> float:
        """The instant this span before `seconds`."""
        if self.unit == "mo":
            # Whole calendar months: back to the start of the month `amount` months earlier.
            month = _moment(period_bounds("1mo", seconds)[0])
            return _add_months(month, -self.amount).timestamp()
        return seconds - self.amount * _SPAN_UNITS[self.unit]


def parse_span(text: str) -> Span:
    match = re.fullmatch(r"\s*(\d+)\s*(s|m|h|d|mo)\s*", text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"{text!r} is not a retention such as 3600s, 60m, 1h, 60d or 24mo")
    return Span(int(match.group(1)), match.group(2))


@dataclass(frozen=True)
class Retention:
    """How long periods of each resolution are kept, as (resolution, span) pairs."""

    spans: tuple[tuple[str, Span], ...]

    def span(self, resolution: str) -> Span:
        return dict(self.spans)[resolution]

    def oldest_kept(self, resolution: str, now: float, window: float) -> float:
        """The start of the oldest period of `resolution` still kept at `now`."""
        cutoff = self.span(resolution).before(now)
        if resolution == BASE:
            return (cutoff // window) * window
        return period_bounds(resolution, cutoff)[0]

    def __str__(self) -> str:
        return ",".join(f"{resolution}={span}" for resolution, span in self.spans)


DEFAULT_RETENTION = Retention(
    (
        (BASE, Span(1, "h")),
        ("1m", Span(1, "d")),
        ("1h", Span(30, "d")),
        ("1d", Span(60, "d")),
        ("1mo", Span(24, "mo")),
    )
)


def parse_retention(text: str) -> Retention:
    """`window=1h,1d=60d,...`: the resolutions named replace their defaults, others keep them."""
    spans = dict(DEFAULT_RETENTION.spans)
    for item in filter(None, (part.strip() for part in text.split(","))):
        resolution, equals, span = item.partition("=")
        if not equals or resolution.strip() not in RESOLUTIONS:
            raise ValueError(f"{item!r} must be RESOLUTION=SPAN, resolution one of {RESOLUTIONS}")
        spans[resolution.strip()] = parse_span(span)
    return Retention(tuple((resolution, spans[resolution]) for resolution in RESOLUTIONS))


def parse_rollups(text: str) -> tuple[str, ...]:
    names = tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))
    unknown = [name for name in names if name not in ROLLUPS]
    if unknown:
        raise ValueError(f"unknown rollup(s) {', '.join(unknown)}; choose from {ROLLUPS}")
    return tuple(name for name in ROLLUPS if name in names)
