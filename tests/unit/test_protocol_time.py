"""controller/protocol.py's RFC 3339 stamps: what rfc3339 writes parse_rfc3339 reads back, and
parse_rfc3339 agrees with datetime (which the CLI does not load for it)."""

from __future__ import annotations

import datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from controller.protocol import parse_rfc3339, rfc3339

MOMENTS = st.datetimes(min_value=datetime.datetime(1, 1, 2),
                       max_value=datetime.datetime(9999, 12, 30), timezones=st.just(datetime.UTC))
OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59)


@given(st.floats(min_value=0, max_value=4e9))
def test_what_is_written_reads_back_to_the_millisecond(seconds: float) -> None:
    assert 0 <= seconds - parse_rfc3339(rfc3339(seconds)) < 0.001 + 1e-6  # written truncated


@given(MOMENTS, OFFSETS)
def test_it_agrees_with_datetime_on_any_time_and_offset(moment: datetime.datetime,
                                                        minutes: int) -> None:
    zone = datetime.timezone(datetime.timedelta(minutes=minutes))
    stamp = moment.astimezone(zone).isoformat(timespec="microseconds")
    assert parse_rfc3339(stamp) == pytest.approx(
        datetime.datetime.fromisoformat(stamp).timestamp(), abs=1e-6)


@pytest.mark.parametrize("stamp", ["2026-02-29T00:00:00Z", "2026-13-01T00:00:00Z",
                                   "2026-11-26T24:00:00Z", "2026-11-26 10:00", "yesterday",
                                   "2026-11-26T10:00:00+0100"])
def test_a_malformed_or_impossible_time_is_refused(stamp: str) -> None:
    with pytest.raises(ValueError, match="not an RFC 3339 time"):
        parse_rfc3339(stamp)


def test_a_leap_day_is_a_day() -> None:
    assert parse_rfc3339("2028-03-01T00:00:00Z") - parse_rfc3339("2028-02-29T00:00:00Z") == 86400
