"""The block manager: O(1) page revival, and revived pages keep their prefix."""
import statistics
import time

from s1.infer.block_manager import BlockManager
from s1.infer.request import Sequence


def _revive_seconds(num_pages: int, n_revive: int = 500) -> float:
    """Time taking `n_revive` pages out of the middle of a free list of `num_pages` pages: what
    reviving a cached page does (allocate() on a prefix hit whose page is free)."""
    bm = BlockManager(num_pages, 1, enable_prefix_caching=True)
    mid = num_pages // 2
    t = time.perf_counter()
    for page in range(mid, mid + n_revive):
        bm._take(page)
    dt = time.perf_counter() - t
    assert bm.num_free == num_pages - n_revive
    return dt


def test_reviving_a_cached_page_is_constant_time():
    """Reviving takes a page out of the middle of the free list. With a deque that was linear in
    the free list (61K pages on an H200: the engine slowed down call after call); now it is O(1):
    the time per revival must not grow with a 100x longer free list (a linear removal: ~100x)."""
    small = statistics.median(_revive_seconds(2_000) for _ in range(5))
    large = statistics.median(_revive_seconds(200_000) for _ in range(5))
    assert large < 5 * small, (small, large)


def test_revived_pages_keep_their_prefix():
    """A finished prompt's pages stay cached on the free list and are revived by the next prompt
    with the same prefix (the exact pages, counted as hits)."""
    bm = BlockManager(64, 4, enable_prefix_caching=True)
    first = Sequence(0, list(range(13)), 4)          # 3 full pages before the last token
    bm.allocate(first)
    pages = list(first.block_table[:3])
    bm.deallocate(first)
    again = Sequence(1, list(range(13)) + [99], 4)
    cached = bm.allocate(again)
    assert again.block_table[:3] == pages and bm.num_prefix_hits == 3 and cached == 12
