"""Periods as values: a calendar year (``2024``) or a quarter (``2025Q2``).

Every stage labels its outputs with a period, and monitoring reasons about them (a quarter belongs
to a year; a year's window of ``n`` years; which periods precede which). This ground-floor module is
the one place that parses, validates, orders and dates them, so every command refuses the same bad
input (``2024Q5``, ``"last year"``) with the same one-line error.

Forms read (:func:`parse_period`):

* labels ``2024``, ``2024Q3`` (also ``2024q3``, ``2024-Q3``, ``2024 Q3``, ``2024_Q3``);
* the published Amazon Mining Watch code ``YYYYQQ``: ``202400`` is the year 2024, ``202502`` is
  2025 Q2 (int, float ``202400.0`` as GeoJSON readers give it, or text);
* integers and integral floats for a year (``2024``, ``2018.0``).

Order: by year, a year before its own quarters (``2024`` < ``2024Q1`` < ``2024Q4`` < ``2025``); a
year and its first quarter start on the same day, and a year is the coarser, so it sorts first.
Date windows are inclusive calendar dates (:attr:`Period.start`, :attr:`Period.end`).
"""

from __future__ import annotations

import datetime as dt
import functools
import math
import numbers
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from minewatch.errors import MinewatchError

MIN_YEAR = 1984
"""Earliest year accepted (Landsat 5 TM; Sentinel-2 itself starts in 2015)."""
MAX_YEAR = 2099

_LABEL = re.compile(r"^(\d{4})(?:[-_ ]?[Qq]([0-9]))?$")
_CODE = re.compile(r"^(\d{4})(\d{2})$")
_CODE_IN_NAME = re.compile(r"(?<!\d)((?:19|20)\d{2})(0[0-4])(?!\d)")

EXAMPLES = "a year (2024), a quarter (2024Q3) or a published code (202400, 202502)"


@dataclass(frozen=True)
class Period:
    """A year (``quarter == 0``) or one of its quarters (1–4)."""

    year: int
    quarter: int = 0

    def __post_init__(self) -> None:
        if not (MIN_YEAR <= self.year <= MAX_YEAR):
            raise ValueError(f"year {self.year} outside {MIN_YEAR}–{MAX_YEAR}")
        if self.quarter not in (0, 1, 2, 3, 4):
            raise ValueError(f"quarter {self.quarter} is not 1–4")

    # ---- identity
    @property
    def label(self) -> str:
        """``2024`` or ``2024Q3``: the form written in every ``period`` column."""
        return str(self.year) if self.quarter == 0 else f"{self.year}Q{self.quarter}"

    @property
    def code(self) -> int:
        """The published encoding: ``202400`` for 2024, ``202502`` for 2025 Q2."""
        return self.year * 100 + self.quarter

    @property
    def is_annual(self) -> bool:
        return self.quarter == 0

    @property
    def annual(self) -> Period:
        """The year this period belongs to (itself for a year)."""
        return Period(self.year)

    def __str__(self) -> str:
        return self.label

    def __lt__(self, other: Period) -> bool:
        return self.key < other.key

    def __le__(self, other: Period) -> bool:
        return self.key <= other.key

    def __gt__(self, other: Period) -> bool:
        return self.key > other.key

    def __ge__(self, other: Period) -> bool:
        return self.key >= other.key

    @property
    def key(self) -> tuple[int, int]:
        """Sort key: year, then quarter (0 = the whole year, first)."""
        return (self.year, self.quarter)

    # ---- dates
    @property
    def start(self) -> dt.date:
        """First day (inclusive)."""
        return dt.date(self.year, 1 if self.quarter == 0 else 3 * self.quarter - 2, 1)

    @property
    def end(self) -> dt.date:
        """Last day (inclusive)."""
        return self.end_exclusive - dt.timedelta(days=1)

    @property
    def end_exclusive(self) -> dt.date:
        """The day after the last day."""
        if self.quarter in (0, 4):
            return dt.date(self.year + 1, 1, 1)
        return dt.date(self.year, 3 * self.quarter + 1, 1)

    def contains(self, other: Period) -> bool:
        """A year contains its quarters (and itself); a quarter only itself."""
        return self == other or (self.is_annual and other.year == self.year)

    def quarters(self) -> list[Period]:
        """The four quarters of a year; a quarter gives itself."""
        return [Period(self.year, q) for q in (1, 2, 3, 4)] if self.is_annual else [self]

    def previous_year(self) -> Period:
        """The full year before this period's year (``2025Q2`` → ``2024``)."""
        return Period(self.year - 1)


def _error(value: object, source: str | Path, why: str) -> MinewatchError:
    return MinewatchError(source, f"{why} in period {value!r}: expected {EXAMPLES}")


def parse_period(value: object, source: str | Path = "--period") -> Period:
    """The :class:`Period` that ``value`` denotes, or a one-line :class:`MinewatchError`.

    ``source`` names where the value came from (an option, or a file) for the error message.
    Strings are parsed once and remembered (layers repeat one period on every row; errors are
    never remembered).
    """
    if isinstance(value, Period):
        return value
    if type(value) is str:
        return _parse_text(value, source)
    return _parse(value, source)


@functools.lru_cache(maxsize=4096)
def _parse_text(value: str, source: str | Path) -> Period:
    return _parse(value, source)


def _parse(value: object, source: str | Path) -> Period:
    if isinstance(value, bool) or is_missing(value):
        raise _error(value, source, "no period")
    if isinstance(value, numbers.Integral):
        value = int(value)
    elif isinstance(value, numbers.Real):
        f = float(value)
        if not f.is_integer():
            raise _error(value, source, "not a period")
        value = int(f)
    text = str(value).strip()
    m = _CODE.match(text)
    if m:
        year, q = int(m.group(1)), int(m.group(2))
        if q > 4:
            raise _error(value, source, f"quarter {q} is not 1–4 (code YYYYQQ, 00 = the whole year)")
        return _checked(year, q, value, source)
    m = _LABEL.match(text)
    if m:
        q = m.group(2)
        if q is not None and not ("1" <= q <= "4"):
            raise _error(value, source, f"quarter {q} is not 1–4")
        return _checked(int(m.group(1)), int(q or 0), value, source)
    raise _error(value, source, "not a period")


def _checked(year: int, quarter: int, value: object, source: str | Path) -> Period:
    if not (MIN_YEAR <= year <= MAX_YEAR):
        raise _error(value, source, f"year {year} outside {MIN_YEAR}–{MAX_YEAR}")
    return Period(year, quarter)


def is_missing(value: object) -> bool:
    """None, NaN or blank text: a missing period (readers report these separately)."""
    if value is None:
        return True
    if isinstance(value, str):
        return not value.strip()
    if isinstance(value, numbers.Real) and not isinstance(value, numbers.Integral):
        return math.isnan(float(value))
    return type(value).__name__ in ("NAType", "NaTType")


def label(value: object, source: str | Path = "--period") -> str:
    """The canonical label (``2024``, ``2024Q3``) of any accepted form; errors as :func:`parse_period`."""
    return parse_period(value, source).label


def encode(value: object) -> int:
    """The published ``YYYYQQ`` code of a period (``2025Q2`` → ``202502``)."""
    return parse_period(value).code


def sort_periods(periods: Iterable[object], source: str | Path = "period") -> list[str]:
    """Unique periods (any accepted form; missing ones skipped) as labels in time order."""
    found = {parse_period(p, source) for p in periods if not is_missing(p)}
    return [p.label for p in sorted(found, key=lambda p: p.key)]


def period_key(value: object) -> tuple[int, int]:
    """Sort key of any accepted form (``sorted(labels, key=period_key)``)."""
    return parse_period(value, "period").key


def from_filename(path: str | Path) -> Period | None:
    """``mining_202400_simplified.geojson`` → 2024; None when the name holds no ``YYYYQQ`` code."""
    m = _CODE_IN_NAME.search(Path(path).stem)
    return Period(int(m.group(1)), int(m.group(2))) if m else None


def from_dates(start: str | dt.date | None, end: str | dt.date | None) -> Period | None:
    """The year or quarter that exactly spans ``start``..``end``, else None.

    ``end`` may be inclusive (``2024-12-31``) or exclusive (``2025-01-01``): both conventions appear
    in composites and chip metadata.
    """
    if not start or not end:
        return None
    try:
        d0 = start if isinstance(start, dt.date) else dt.date.fromisoformat(str(start)[:10])
        d1 = end if isinstance(end, dt.date) else dt.date.fromisoformat(str(end)[:10])
    except ValueError:
        return None
    if not (MIN_YEAR <= d0.year <= MAX_YEAR):
        return None
    for q in (0, 1, 2, 3, 4):
        p = Period(d0.year, q)
        if p.start == d0 and d1 in (p.end, p.end_exclusive):
            return p
    return None


def parse_period_list(text: str, source: str = "--periods") -> list[Period]:
    """``2024,2025Q1..2025Q4`` → the listed periods, in time order, without repeats.

    A range ``A..B`` runs over periods of A's kind: years (``2019..2024``) or quarters
    (``2025Q1..2025Q4``, which may cross years); its ends must be of one kind and in order.
    """
    out: set[Period] = set()
    items = [t.strip() for t in str(text).split(",")]
    if not any(items):
        raise MinewatchError(source, f"no periods given: expected a list such as 2024,2025Q1..2025Q4")
    for item in items:
        if not item:
            raise MinewatchError(source, f"empty item in {text!r}")
        if ".." in item:
            a_text, _, b_text = item.partition("..")
            a, b = parse_period(a_text, source), parse_period(b_text, source)
            if a.is_annual != b.is_annual:
                raise MinewatchError(source, f"range {item!r} mixes a year and a quarter")
            if b < a:
                raise MinewatchError(source, f"range {item!r} runs backwards")
            out.update(period_range(a, b))
        else:
            out.add(parse_period(item, source))
    return sorted(out, key=lambda p: p.key)


def period_range(a: Period, b: Period) -> list[Period]:
    """Every period from ``a`` to ``b`` inclusive, of ``a``'s kind."""
    if a.is_annual:
        return [Period(y) for y in range(a.year, b.year + 1)]
    out, y, q = [], a.year, a.quarter
    while (y, q) <= (b.year, b.quarter):
        out.append(Period(y, q))
        y, q = (y + 1, 1) if q == 4 else (y, q + 1)
    return out


def iso_datetime(day: dt.date, end_of_day: bool = False) -> str:
    """An ISO 8601 UTC date-time for a calendar day: ``2024-01-01T00:00:00Z`` or ``…T23:59:59Z``."""
    t = dt.time(23, 59, 59) if end_of_day else dt.time(0, 0, 0)
    return dt.datetime.combine(day, t).strftime("%Y-%m-%dT%H:%M:%SZ")


__all__ = [
    "Period", "parse_period", "label", "encode", "sort_periods", "period_key", "from_filename", "from_dates",
    "parse_period_list", "period_range", "iso_datetime", "is_missing", "MIN_YEAR", "MAX_YEAR",
]
