"""Page allocator for the paged KV cache: free list, reference counts, prefix sharing.

Prefix sharing (as vLLM): a *full* page is identified by a chained hash
h_i = SHA-256(h_{i-1} || tokens of page i as int64), h_{-1} = a random per-process root, so a key
cannot be crafted to collide (Python's `hash()` of tuples is unkeyed and 64-bit: a chosen prompt
could alias another user's page and attend over its KV). A hit is trusted only after a full check:
the page's stored tokens equal the sequence's tokens of that page AND the page's recorded parent
is the previous page of the hit chain, in the same generation (a page handed out again gets a new
generation, which orphans pages computed on top of its old content). By induction a hit chain
holds exactly the sequence's prefix, whatever the hash function (tests force collisions). A page
whose hash is known can be reused by any later sequence with the same prefix (its ref count goes
up); freed pages keep their hash until they are handed out again, so a finished prompt's pages can
still be revived. Only pages strictly before a sequence's last token are looked up: the last token
is always recomputed so the prefill yields logits.

Every operation is O(1) per page, whatever the number of pages, cached hashes or requests served:
the free list is an ordered dict (oldest freed page handed out first, so recently freed cached
pages live longest; reviving a cached page removes it from the middle in O(1)).
Each allocated page is reported to `on_page(seq, index, page)` so the engine can keep the
device-side block tables current without rebuilding them. The block manager writes only a
sequence's page list (`block_table`); what a lookup found is returned to the scheduler, which
writes the sequence's other fields.
"""
from __future__ import annotations

import hashlib
import os
from array import array
from collections import OrderedDict
from typing import Callable, NamedTuple

from s1.infer.request import Sequence

ROOT_HASH = os.urandom(32)     # h_{-1}: random per process (as vLLM's NONE_HASH), so keys are unguessable


def chain_hash(prev: bytes, tokens) -> bytes:
    """h_i = SHA-256(h_{i-1} || the page's token ids as little-endian int64)."""
    return hashlib.sha256(prev + array("q", tokens).tobytes()).digest()


class Lookup(NamedTuple):
    """A prefix-cache lookup: the hit pages in order, and the chained hash after the last hit."""
    hits: list
    hash: bytes


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
        self.page_hash: list[bytes | None] = [None] * num_pages
        self.page_tokens: list[tuple | None] = [None] * num_pages  # the full check of a hit
        self.page_parent: list[tuple | None] = [None] * num_pages  # (previous page, its generation)
        self.generation = [0] * num_pages                          # +1 each time a page loses its content
        self.hash_to_page: dict[bytes, int] = {}
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
        """The page's content is about to change: drop its key (pages registered on top of it
        are orphaned by the new generation)."""
        h = self.page_hash[page]
        if h is not None and self.hash_to_page.get(h) == page:
            del self.hash_to_page[h]
        self.page_hash[page] = None
        self.page_tokens[page] = None
        self.page_parent[page] = None
        self.generation[page] += 1

    def _parent(self, prev_page: int | None):
        return None if prev_page is None else (prev_page, self.generation[prev_page])

    def _give(self, seq: Sequence, page: int) -> None:
        seq.block_table.append(page)
        if self.on_page is not None:
            self.on_page(seq, len(seq.block_table) - 1, page)

    def lookup(self, seq: Sequence) -> Lookup:
        """seq's leading full pages found in the cache (each checked in full), in order."""
        hits, h = [], ROOT_HASH
        if not self.enable_prefix_caching:
            return Lookup(hits, h)
        known, ps = seq.token_ids, self.page_size
        prev = None
        for i in range((seq.num_tokens - 1) // ps):
            toks = tuple(known[i * ps:(i + 1) * ps])
            h_i = chain_hash(h, toks)
            page = self.hash_to_page.get(h_i)
            if page is None or self.page_tokens[page] != toks or self.page_parent[page] != self._parent(prev):
                break
            hits.append(page)
            h, prev = h_i, page
        return Lookup(hits, h)

    # ---------------------------------------------------------------- prefill
    def can_allocate(self, seq: Sequence, found: Lookup | None = None) -> bool:
        hits = (found or self.lookup(seq)).hits
        revived = sum(1 for p in hits if p in self.free)
        return seq.num_blocks - len(hits) + revived <= self.num_free

    def allocate(self, seq: Sequence, found: Lookup | None = None) -> int:
        """Give seq pages for all its tokens (`found`: this scheduling step's lookup of seq).
        Returns the number of tokens whose KV came from the prefix cache."""
        assert not seq.block_table, "sequence already holds pages"
        assert seq.num_known_tokens == seq.num_tokens, "admitted with tokens still on the device"
        hits, h = found or self.lookup(seq)
        for p in hits:
            if p in self.free:
                self._take(p)
            else:
                self.ref_count[p] += 1
            self._give(seq, p)
        self.num_prefix_hits += len(hits)
        ps = self.page_size
        known = seq.token_ids
        for i in range(len(hits), seq.num_blocks):
            page = self._take()
            self._forget(page)
            self._give(seq, page)
            # register full pages before the last token (their KV is computed in this prefill; a
            # prefill that fails calls unregister)
            if self.enable_prefix_caching and (i + 1) * ps <= seq.num_tokens - 1:
                toks = tuple(known[i * ps:(i + 1) * ps])
                h = chain_hash(h, toks)
                if h not in self.hash_to_page:
                    self.hash_to_page[h] = page
                    self.page_hash[page] = h
                    self.page_tokens[page] = toks
                    self.page_parent[page] = self._parent(seq.block_table[i - 1] if i else None)
        return len(hits) * ps

    def unregister(self, seq: Sequence, first_page: int) -> None:
        """seq's pages from index `first_page` on never got their KV (its prefill failed): drop
        their keys so no later request reuses them."""
        for page in seq.block_table[first_page:]:    # taken fresh for seq in this step
            self._forget(page)

    def deallocate(self, seq: Sequence) -> None:
        for page in reversed(seq.block_table):
            self.ref_count[page] -= 1
            assert self.ref_count[page] >= 0
            if self.ref_count[page] == 0:
                self.free[page] = None   # keeps its hash: revivable until handed out again
        seq.block_table = []

    # ---------------------------------------------------------------- decode
    def append_page(self, seq: Sequence) -> None:
        """One more page for a decoding sequence whose next position starts a new page (the
        scheduler knows when; a free page must exist)."""
        page = self._take()
        self._forget(page)
        self._give(seq, page)
