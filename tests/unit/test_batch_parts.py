"""Cutting a fetch batch into parts by size (mailbot.mailbox.poller.by_size)."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from mailbot.mailbox.poller import by_size


def test_parts_stay_under_the_limit_and_keep_the_order() -> None:
    sizes = {1: 400, 2: 500, 3: 100, 4: 2000, 5: 300, 6: 700}
    assert by_size([1, 2, 3, 4, 5, 6], sizes, 1000) == [[1, 2, 3], [4], [5, 6]]
    assert by_size([], sizes, 1000) == []
    assert by_size([4], sizes, 1000) == [[4]]  # bigger than the limit: alone
    assert by_size([1, 2, 3, 4, 5, 6], sizes, 10_000) == [[1, 2, 3, 4, 5, 6]]


@given(
    st.lists(st.integers(min_value=0, max_value=5000), max_size=60),
    st.integers(min_value=1, max_value=8000),
)
def test_every_uid_once_in_order_each_part_within_the_limit_or_alone(
    sizes: list[int], limit: int
) -> None:
    by_uid = {uid: size for uid, size in enumerate(sizes, start=1)}
    parts = by_size(list(by_uid), by_uid, limit)
    assert [uid for part in parts for uid in part] == list(by_uid)
    for part in parts:
        assert part and (sum(by_uid[uid] for uid in part) <= limit or len(part) == 1)
    # Parts are as full as they may be: the next part's first message did not fit.
    for part, following in itertools.pairwise(parts):
        assert sum(by_uid[uid] for uid in part) + by_uid[following[0]] > limit
