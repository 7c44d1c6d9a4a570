"""Continuous batching (nano-vllm's policy).

Each step is either a prefill step (waiting sequences admitted in FIFO order while pages are free,
under a token budget `max_num_batched_tokens`; there is no chunked prefill, so a sequence longer
than the budget is admitted alone, in a step of its own, and is never split or refused for it)
or a decode step (one token for every running sequence). When a decode step
needs a page and none is free, the newest running sequence is preempted: its pages are freed and
it goes back to the front of the waiting queue, to be recomputed later by a prefill over its
prompt + outputs so far. Nothing is lost or truncated.
"""
from __future__ import annotations

from collections import deque

from infer.block_manager import BlockManager
from infer.request import Sequence, Status


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int):
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        # a lone sequence can hold every page, so this length always fits
        self.max_len = min(max_model_len, block_manager.num_pages * block_manager.page_size)
        self.waiting: deque[Sequence] = deque()
        self.running: deque[Sequence] = deque()
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def is_finished(self) -> bool:
        return not self.waiting and not self.running

    def schedule(self) -> tuple[list[Sequence], bool]:
        # ---- prefill: admit waiting sequences while pages and the token budget allow
        scheduled, num_batched = [], 0
        while self.waiting and len(self.running) + len(scheduled) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.num_known_tokens != seq.num_tokens:
                break  # its last token is still on the device (async output); next step
            new_tokens = seq.num_tokens  # upper bound; prefix hits make it smaller
            if scheduled and num_batched + new_tokens > self.max_num_batched_tokens:
                break
            if not self.bm.can_allocate(seq):
                break
            self.bm.allocate(seq)
            num_batched += seq.num_tokens - seq.num_cached_tokens
            seq.status = Status.RUNNING
            self.waiting.popleft()
            scheduled.append(seq)
        if scheduled:
            self.running.extend(scheduled)
            return scheduled, True

        # ---- decode: one token per running sequence, preempting the newest when out of pages
        kept = []
        while self.running:
            seq = self.running.popleft()
            if seq.num_tokens >= self.max_len:
                kept.append(seq)  # at its length limit; finished when its last token arrives
                continue
            while not self.bm.can_append(seq):
                if self.running:
                    self.preempt(self.running.pop())
                else:
                    self.preempt(seq)
                    break
            else:
                self.bm.append_slot(seq)
                scheduled.append(seq)
                kept.append(seq)
        self.running.extend(kept)
        return scheduled, False

    def preempt(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.bm.deallocate(seq)
        self.waiting.appendleft(seq)

    def finish(self, seq: Sequence, reason: str) -> None:
        if seq.status == Status.FINISHED:
            return
        seq.finish_reason = reason
        if seq.status == Status.RUNNING:
            self.running.remove(seq)
        else:
            self.waiting.remove(seq)
        seq.status = Status.FINISHED
        self.bm.deallocate(seq)
