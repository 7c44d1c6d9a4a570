"""Continuous batching (nano-vllm's policy), and the one owner of every sequence's state.

Each step is either a prefill step (waiting sequences admitted in FIFO order while pages, device
slots and the token budget `max_num_batched_tokens` allow; there is no chunked prefill, so a
sequence longer than the budget is admitted alone, in a step of its own, and is never split or
refused for it) or a decode step (one token for every running sequence). When a decode step needs
a page and none is free, the newest running sequence is preempted: its pages are freed, it keeps
its device slot (its budget-forcing state lives on), and it goes back to the front of the waiting
queue, to be recomputed by a prefill over its prompt + outputs so far. Nothing is lost or truncated.

`postprocess` applies a step's device result (StepResult) to the sequences: appends the tokens,
copies the counters, and finishes the ones the device marked DONE. Every limit (thinking cap,
answer length, max_tokens and the context, folded into the request's max_tokens at admission) is
decided on the device; `finish` / `abort` release pages and the slot. All operations cost O(1) per
sequence touched, whatever the number of requests served.
"""
from __future__ import annotations

from collections import deque

from infer.block_manager import BlockManager
from infer.budget import FINISH_REASONS, StepResult
from infer.request import Sequence, Status
from kernels import force_state as fs


class Scheduler:
    def __init__(self, block_manager: BlockManager, max_num_seqs: int, max_num_batched_tokens: int,
                 max_model_len: int, num_slots: int):
        self.bm = block_manager
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        # a lone sequence can hold every page, so this length always fits
        self.max_len = min(max_model_len, block_manager.num_pages * block_manager.page_size)
        self.waiting: deque[Sequence] = deque()
        self.running: dict[object, Sequence] = {}     # insertion order = admission order
        self.free_slots = list(range(num_slots - 1, -1, -1))
        self.admitted: list[Sequence] = []            # first admissions of this step (need their rules)
        self.num_preemptions = 0

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or bool(self.running)

    # ------------------------------------------------------------------ scheduling
    def schedule(self) -> tuple[list[Sequence], bool]:
        # ---- prefill: admit waiting sequences while pages, slots and the token budget allow
        scheduled, num_batched = [], 0
        while self.waiting and len(self.running) + len(scheduled) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.num_known_tokens != seq.num_tokens:
                break  # its last token is still on the device (async output); next step
            if seq.slot is None and not self.free_slots:
                break
            if scheduled and num_batched + seq.num_tokens > self.max_num_batched_tokens:
                break
            if not self.bm.can_allocate(seq):
                break
            if seq.slot is None:                      # first admission: a device row of its own
                seq.slot = self.free_slots.pop()
                self.admitted.append(seq)
            self.bm.allocate(seq)
            num_batched += seq.num_tokens - seq.num_cached_tokens
            seq.status = Status.RUNNING
            self.waiting.popleft()
            scheduled.append(seq)
        if scheduled:
            for s in scheduled:
                self.running[s.request_id] = s
            return scheduled, True

        # ---- decode: one token per running sequence, preempting the newest when out of pages
        # (the common case -- the sequence's last page has room -- is inlined: no calls per sequence)
        order = deque(self.running.values())
        kept: list[Sequence] = []
        bm, ps, max_len = self.bm, self.bm.page_size, self.max_len
        while order:
            seq = order.popleft()
            n = seq.num_tokens
            if n >= max_len:
                kept.append(seq)  # at its length limit: the device finishes it with this step's result
                continue
            if len(seq.block_table) * ps >= n:        # position n - 1 is inside its last page
                scheduled.append(seq)
                kept.append(seq)
                continue
            while not bm.can_append(seq):
                if order:
                    self.preempt(order.pop())
                else:
                    self.preempt(seq)
                    break
            else:
                bm.append_slot(seq)
                scheduled.append(seq)
                kept.append(seq)
        if len(kept) != len(self.running):
            self.running = {s.request_id: s for s in kept}
        return scheduled, False

    def launched(self, seqs: list[Sequence]) -> None:
        """The step ran: each scheduled sequence has one more token (its value may still be on the
        device)."""
        for s in seqs:
            s.num_tokens += 1

    def preempt(self, seq: Sequence) -> None:
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.bm.deallocate(seq)
        self.waiting.appendleft(seq)

    # ------------------------------------------------------------------ results
    def postprocess(self, seqs: list[Sequence], res: StepResult) -> list[Sequence]:
        """Apply one step's device result. Returns the sequences that produced a token or
        finished, in batch order."""
        out = []
        FINISHED, ANSWER, ANSWER_LEN = Status.FINISHED, fs.ANSWER, fs.FIN_ANSWER_LEN
        for s, tok, emitted, done, fin, think, waits, ph in zip(seqs, *res):
            if s.status is FINISHED:                  # aborted while its step was in flight
                continue
            if emitted:
                s.output_ids.append(tok)
            s.num_thinking_tokens = think
            s.num_waits_used = waits
            if s.answer_start is None and (ph == ANSWER or fin == ANSWER_LEN):
                s.answer_start = len(s.output_ids)    # the answer starts after this (forced) token
            if done:
                self.finish(s, FINISH_REASONS[fin])
            if emitted or done:
                out.append(s)
        return out

    def finish(self, seq: Sequence, reason: str) -> None:
        if seq.status == Status.FINISHED:
            return
        seq.finish_reason = reason
        if seq.status == Status.RUNNING:
            self.running.pop(seq.request_id, None)
        else:
            self.waiting.remove(seq)                  # abort of a waiting request (rare)
        seq.status = Status.FINISHED
        self.bm.deallocate(seq)
        if seq.slot is not None:
            self.free_slots.append(seq.slot)
            seq.slot = None
