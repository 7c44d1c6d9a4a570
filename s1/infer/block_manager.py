"""Page allocator for the paged KV cache: free list, reference counts, prefix sharing.

Prefix sharing (as vLLM / nano-vllm): a *full* page is identified by a chained hash
h_i = hash(h_{i-1}, tokens of page i), so equal hashes mean equal whole prefixes. A page whose
hash is known can be reused by any later sequence with the same prefix (its ref count goes up);
freed pages keep their hash until they are handed out again, so a finished prompt's pages can
still be revived. Only pages strictly before a sequence's last token are looked up: the last
token is always recomputed so the prefill yields logits.

Every operation is O(1) per page, whatever the number of pages, cached hashes or requests served:
the free list is an ordered dict (oldest freed page handed out first, so recently freed cached
pages live longest; reviving a cached page removes it from the middle in O(1)).
Each allocated page is reported to `on_page(seq, index, page)` so the engine can keep the
device-side block tables current without rebuilding them.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

from s1.infer.request import Sequence


def chain_hash(prev: int, tokens) -> int:
    return hash((prev, tuple(tokens)))


class BlockManager:
    def __init__(self, num_pages: int, page_size: int, enable_prefix_caching: bool = True,
                 on_page: Callable[[Sequence, int, int], None] | None = None):
        if num_pages < 1 or page_size < 1:
            raise ValueError(f"need num_pages >= 1 and page_size >= 1 (got {num_pages}, {page_size})")
        self.num_pages = num_pages
        self.page_size = page_size
        self.enable_prefix_caching = enable_prefix_caching
        self.on_page = on_page
        self.ref_count = [0] * num_pages
        self.page_hash: list[int | None] = [None] * num_pages
        self.page_tokens: list[tuple | None] = [None] * num_pages  # guards against hash collisions
        self.hash_to_page: dict[int, int] = {}
        self.free: OrderedDict[int, None] = OrderedDict.fromkeys(range(num_pages))
        self.num_prefix_hits = 0          # pages reused from the cache (statistics)

    @property
    def num_free(self) -> int:
        return len(self.free)

    @property
    def num_used(self) -> int:
        return self.num_pages - len(self.free)

    # ---------------------------------------------------------------- internals
    def _take(self, page: int | None = None) -> int:
        """A free page (the oldest freed, or `page`): O(1) either way."""
        if page is None:
            page, _ = self.free.popitem(last=False)
        else:
            del self.free[page]
        self.ref_count[page] += 1
        return page

    def _forget(self, page: int) -> None:
        h = self.page_hash[page]
        if h is not None and self.hash_to_page.get(h) == page:
            del self.hash_to_page[h]
        self.page_hash[page] = None
        self.page_tokens[page] = None

    def _give(self, seq: Sequence, page: int) -> None:
        seq.block_table.append(page)
        if self.on_page is not None:
            self.on_page(seq, len(seq.block_table) - 1, page)

    def _lookup(self, seq: Sequence) -> list[int]:
        """Pages holding seq's leading full pages (prefix hits), in order."""
        if not self.enable_prefix_caching:
            return []
        hits, h = [], 0
        known, ps = seq.token_ids, self.page_size
        for i in range((seq.num_tokens - 1) // ps):
            toks = tuple(known[i * ps:(i + 1) * ps])
            h = chain_hash(h, toks)
            page = self.hash_to_page.get(h)
            if page is None or self.page_tokens[page] != toks:
                break
            hits.append(page)
        return hits

    # ---------------------------------------------------------------- prefill
    def can_allocate(self, seq: Sequence) -> bool:
        hits = self._lookup(seq)
        seq._hits = hits                  # reused by allocate() in the same scheduling step
        revived = sum(1 for p in hits if p in self.free)
        return seq.num_blocks - len(hits) + revived <= self.num_free

    def allocate(self, seq: Sequence) -> None:
        """Give seq pages for all its tokens; sets seq.num_cached_tokens from prefix hits."""
        assert not seq.block_table, "sequence already holds pages"
        assert seq.num_known_tokens == seq.num_tokens, "admitted with tokens still on the device"
        hits = self._lookup(seq) if seq._hits is None else seq._hits   # can_allocate() looked them up
        seq._hits = None
        for p in hits:
            if p in self.free:
                self._take(p)
            else:
                self.ref_count[p] += 1
            self._give(seq, p)
        self.num_prefix_hits += len(hits)
        ps = self.page_size
        seq.num_cached_tokens = len(hits) * ps
        known = seq.token_ids
        h = 0
        for i in range(len(hits)):
            h = chain_hash(h, known[i * ps:(i + 1) * ps])
        for i in range(len(hits), seq.num_blocks):
            page = self._take()
            self._forget(page)
            self._give(seq, page)
            # register full pages before the last token (their KV is computed in this prefill)
            if self.enable_prefix_caching and (i + 1) * ps <= seq.num_tokens - 1:
                toks = tuple(known[i * ps:(i + 1) * ps])
                h = chain_hash(h, toks)
                if h not in self.hash_to_page:
                    self.hash_to_page[h] = page
                    self.page_hash[page] = h
                    self.page_tokens[page] = toks

    def deallocate(self, seq: Sequence) -> None:
        for page in reversed(seq.block_table):
            self.ref_count[page] -= 1
            assert self.ref_count[page] >= 0
            if self.ref_count[page] == 0:
                self.free[page] = None   # keeps its hash: revivable until handed out again
        seq.block_table = []
        seq.num_cached_tokens = 0

    # ---------------------------------------------------------------- decode
    def append_page(self, seq: Sequence) -> None:
        """One more page for a decoding sequence whose next position starts a new page (the
        scheduler knows when; a free page must exist)."""
        page = self._take()
        self._forget(page)
        self._give(seq, page)
