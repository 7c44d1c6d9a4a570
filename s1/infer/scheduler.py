"""Continuous batching (nano-vllm's policy), and the one owner of every sequence's state.

Each step is either a prefill step (waiting sequences admitted in FIFO order while pages, device
slots and the token budget `max_num_batched_tokens` allow; there is no chunked prefill, so a
sequence longer than the budget is admitted alone, in a step of its own, and is never split or
refused for it) or a decode step (one token for every running sequence). When a decode step needs
a page and none is free, the newest running sequence is preempted: its pages are freed, it keeps
its device slot (its budget-forcing state lives on), and it goes back to the front of the waiting
queue, to be recomputed by a prefill over its prompt + outputs so far. Nothing is lost or truncated.
A decode step's Python work is per page, not per sequence: each running sequence is filed under
the decode step at which it will next need a page (or reach its length limit) and looked at then.

`postprocess` applies a step's device result (StepResult) to the sequences: appends the tokens,
copies the counters, and finishes the ones the device marked DONE. Every limit (thinking cap,
answer length, max_tokens and the context, folded into the request's max_tokens at admission) is
decided on the device; `finish` / `abort` release pages and the slot. All operations cost O(1) per
sequence touched, whatever the number of requests served.
"""
from __future__ import annotations

import itertools
from collections import defaultdict, deque
from operator import attrgetter

from s1.infer.block_manager import BlockManager
from s1.infer.budget import FINISH_REASONS, StepResult
from s1.infer.request import Sequence, Status
from s1.kernels import force_state as fs

_admission_order = attrgetter("_admission")


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
        self._decode_steps = 0                        # decode steps scheduled so far
        self._due: defaultdict[int, list[Sequence]] = defaultdict(list)   # decode step -> sequences to check
        self._admissions = itertools.count()          # running order (the preemption policy's)

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    def has_unfinished(self) -> bool:
        return bool(self.waiting) or bool(self.running)

    # ------------------------------------------------------------------ scheduling
    def schedule(self) -> tuple[list[Sequence], bool]:
        """The next step's sequences, and whether it is a prefill step."""
        scheduled = self._schedule_prefill()
        if scheduled:
            return scheduled, True
        return self._schedule_decode(), False

    def _schedule_prefill(self) -> list[Sequence]:
        """Admit waiting sequences while pages, slots and the token budget allow."""
        scheduled, num_batched = [], 0
        while self.waiting and len(self.running) + len(scheduled) < self.max_num_seqs:
            seq = self.waiting[0]
            if seq.num_known_tokens != seq.num_tokens:
                break  # its last token is still on the device (async output); next step
            if seq.slot is None and not self.free_slots:
                break
            if scheduled and num_batched + seq.num_tokens > self.max_num_batched_tokens:
                break
            found = self.bm.lookup(seq)
            if not self.bm.can_allocate(seq, found):
                break
            if seq.slot is None:                      # first admission: a device row of its own
                seq.slot = self.free_slots.pop()
                self.admitted.append(seq)
            seq.num_cached_tokens = self.bm.allocate(seq, found)
            num_batched += seq.num_tokens - seq.num_cached_tokens
            seq.status = Status.RUNNING
            self.waiting.popleft()
            scheduled.append(seq)
        for s in scheduled:
            self.running[s.request_id] = s
            s._admission = next(self._admissions)
            self._file(s, self._decode_steps)         # its first decode step checks its pages
        return scheduled

    def _schedule_decode(self) -> list[Sequence]:
        """One token per running sequence, preempting the newest when out of pages. A running
        sequence advances one position per decode step, so the step at which it next needs a page
        (or reaches its length limit) is known in advance: it is filed under that step (`_due`)
        and looked at only then -- about once per page_size steps -- instead of every sequence
        being checked every step."""
        k = self._decode_steps
        self._decode_steps += 1
        RUNNING = Status.RUNNING
        due = [s for s in dict.fromkeys(self._due.pop(k, ())) if s.status is RUNNING and s._due_at == k]
        if not due:
            return list(self.running.values())
        due.sort(key=_admission_order)                # the preemption policy's order
        bm, ps, max_len = self.bm, self.bm.page_size, self.max_len
        at_limit = []
        for seq in due:
            if seq.status is not RUNNING:             # preempted for an earlier one of this step
                continue
            n = seq.num_tokens
            if n >= max_len:        # at its length limit: the device finishes it with the result
                at_limit.append(seq)                  # in flight; not scheduled
                self._file(seq, k + 1)
                continue
            if len(seq.block_table) * ps < n:         # position n - 1 starts a new page
                while not bm.free:                    # out of pages: preempt the newest
                    victim = next(reversed(self.running.values()))
                    self.preempt(victim)
                    if victim is seq:
                        break
                if seq.status is not RUNNING:
                    continue
                bm.append_page(seq)
            self._file(seq, k + min(len(seq.block_table) * ps - n + 1, max_len - n))
        scheduled = list(self.running.values())
        if at_limit:
            skip = set(at_limit)                      # sequences hash by identity
            scheduled = [s for s in scheduled if s not in skip]
        return scheduled

    def _file(self, seq: Sequence, step: int) -> None:
        """Look at `seq` again at decode step `step` (the one where it needs a page or stops)."""
        seq._due_at = step
        self._due[step].append(seq)

    def launched(self, seqs: list[Sequence]) -> None:
        """The step ran: each scheduled sequence has one more token (its value may still be on the
        device)."""
        for s in seqs:
            s.num_tokens += 1

    def preempt(self, seq: Sequence) -> None:
        self.running.pop(seq.request_id, None)
        seq.status = Status.WAITING
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.bm.deallocate(seq)
        seq.num_cached_tokens = 0
        self.waiting.appendleft(seq)

    # ------------------------------------------------------------------ results
    def postprocess(self, seqs: list[Sequence], res: StepResult) -> list[Sequence]:
        """Apply one step's device result to the step's sequences. Returns the sequences to
        report: streaming ones that produced a token (in batch order), then the others that
        finished."""
        FINISHED, ANSWER, ANSWER_LEN = Status.FINISHED, fs.ANSWER, fs.FIN_ANSWER_LEN
        report = []
        for s, tok, e, think, waits, ph, fin in zip(seqs, res.token, res.emitted, res.thinking_tokens,
                                                    res.waits_used, res.phase, res.finish):
            if s.status is FINISHED:                  # aborted while its step was in flight
                continue
            if e:
                s.output_ids.append(tok)
            s.num_thinking_tokens = think
            s.num_waits_used = waits
            if s.answer_start is None and (ph == ANSWER or fin == ANSWER_LEN):
                s.answer_start = len(s.output_ids)    # the answer starts after this (forced) token
            if e and s.stream:
                report.append(s)
        if not res.any_done:                          # the common step: nothing finished
            return report
        report = dict.fromkeys(report)
        for s, done, fin in zip(seqs, res.done, res.finish):
            if done and s.status is not FINISHED:
                self.finish(s, FINISH_REASONS[fin])
                report[s] = None
        return list(report)

    def fail(self, seqs: list[Sequence], error: str, is_prefill: bool) -> list[Sequence]:
        """A step failed as a whole (the runner raised): its sequences finish with "error" and
        free their pages and slots; a failed prefill's freshly registered prefix pages never got
        their KV and lose their keys. Returns the sequences failed now."""
        failed = []
        for s in seqs:
            if s.status is Status.FINISHED:
                continue
            if is_prefill:
                self.bm.unregister(s, s.num_cached_tokens // self.bm.page_size)
            self.finish(s, "error", error)
            failed.append(s)
        return failed

    def finish(self, seq: Sequence, reason: str, error: str | None = None) -> None:
        if seq.status == Status.FINISHED:
            return
        seq.finish_reason = reason
        seq.error = error
        if seq.status == Status.RUNNING:
            self.running.pop(seq.request_id, None)
            if not self.running:                      # every filed entry is stale: keep no finished
                self._due.clear()                     # request alive through them
        else:
            self.waiting.remove(seq)                  # abort of a waiting request (rare)
        seq.status = Status.FINISHED
        self.bm.deallocate(seq)
        seq.num_cached_tokens = 0
        if seq.slot is not None:
            self.free_slots.append(seq.slot)
            seq.slot = None
