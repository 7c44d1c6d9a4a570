"""Budget forcing's per-request state, as the sampling op `sample_and_force` reads and writes it.

One row per request (the engine's slot). The op samples each row's next token from its logits and
applies s1's budget-forcing rules in the same pass (s1/kernels/reference.py is the torch
specification, s1/kernels/sampling.py the fused Triton kernel; s1/infer/budget.py owns the tables).

Tables (`ForceTables`):
  state    [R, NUM_COLS] int64   counters, phase and per-request limits (columns below)
  fparams  [R, 2] fp32           INV_TEMP (1/temperature, 0 = greedy), TOP_P
  forced   [R, 3, L] int64       the forced token sequences: F_EXT (the extension, e.g. "Wait"),
                                 F_END (forced end of thinking, e.g. "\\n<|im_start|>answer\\nFinal
                                 Answer:"), F_DELIM (natural end: "<|im_start|>answer"); lengths
                                 in state[:, FORCE_LEN + kind]
  stop     [R, NSTOP] int64      answer-phase stop ids (-1 = unused)
  think_end [M] int64            single ids that end thinking (s1: <|im_start|>, <|im_end|>,
                                 <|endoftext|>); the sampler masks them out of t_m
  end_rules [3, M2] int64        the end-of-thinking rules, one column per rule: [0] the id, [1] the
                                 id that must precede it (-1: none; a two-token end such as s1's
                                 step-conditional "<|im_start|>0"), [2] KEEP (1: the id stays in the
                                 context, as s1 keeps an <|endoftext|> that ends a round). None:
                                 every think_end id, dropped, no predecessor.
  newline  [V] uint8             1 where the token's text ends with "\\n"

The rules, per row and step (s1's evaluation loop, token for token; t_u = the sampled token,
t_m = the sampled token with the think_end ids masked out):
  THINK   masked = thinking tokens < MIN_THINK or MASK_NEXT; c = t_m if masked else t_u.
          c an end id = c matches a rule of end_rules (and the previous token is the rule's
          predecessor, if it has one).
          c not an end id -> emit c (a thinking token).
          c an end id, WAITS_LEFT > 0 -> one extension: emit the extension's ids (the end id is
          dropped; the first now, the rest in FORCE), then MASK_NEXT = 1: the next generated token
          may not be an end id (s1's vLLM min_tokens=1 per round); an empty extension emits t_m.
          c an end id, no waits left -> natural end: emit F_DELIM ("<|im_start|>answer"), then
          ANSWER (the model writes what follows). A two-token end (predecessor p already emitted)
          emits F_DELIM from position 1 (F_DELIM starts with p; the engine checks it) and takes p
          back out of the thinking count.
          c a KEEP end id (s1's <|endoftext|>): emit c itself (a thinking token), then FORCE the
          extension from position 0 (waits left), or F_DELIM from position 0 (none left); an
          empty extension -> THINK with MASK_NEXT = 1.
  FORCE   emit forced[kind][FORCE_POS]; extension tokens count as thinking tokens.
  ANSWER  emit t_u; a stop id ends the request (FIN_STOP), the id is emitted.
  after every step: thinking tokens >= MAX_THINK while thinking (or inside an extension) ->
          FORCE F_END from position END_SKIP_NL * newline[last token] (s1 inserts the leading
          "\\n" only when the thinking does not already end with a newline);
          ANSWER_USED >= MAX_ANSWER -> DONE (FIN_ANSWER_LEN); OUT_COUNT >= MAX_TOKENS -> DONE
          (FIN_MAX_TOKENS). DONE rows emit PAD and change nothing.
MASK_NEXT is also set at admission when the request has extensions (min_tokens=1 on s1's first
round too).

The op returns a [NUM_RESULT, B] int64 tensor: per row the emitted token, whether the row was
live (emitted), whether it is now DONE, the finish code, thinking tokens and extensions used so
far, and the phase after the step (`StepResult` in s1/infer/budget.py gives them names).
"""
from __future__ import annotations

from typing import NamedTuple

import torch

# phases
THINK, FORCE, ANSWER, DONE = 0, 1, 2, 3
# forced sequences
F_EXT, F_END, F_DELIM = 0, 1, 2
# finish codes
FIN_NONE, FIN_STOP, FIN_ANSWER_LEN, FIN_MAX_TOKENS = 0, 1, 2, 3

# int64 state columns
PHASE = 0
THINK_USED = 1
WAITS_LEFT = 2
WAITS_USED = 3
FORCE_KIND = 4
FORCE_POS = 5
ANSWER_USED = 6
OUT_COUNT = 7        # output tokens so far (also the position of the sampling noise)
FINISH = 8
LAST_TOKEN = 9       # the newest token of the sequence (prompt's last before any output)
MASK_NEXT = 10
MAX_THINK = 11
MIN_THINK = 12
MAX_ANSWER = 13
MAX_TOKENS = 14
TOP_K = 15
SEED = 16
END_SKIP_NL = 17     # F_END starts with a conditional newline
FORCE_LEN = 18       # + F_EXT / F_END / F_DELIM: the forced sequences' lengths
NUM_COLS = 21

# fp32 parameter columns
INV_TEMP, TOP_P = 0, 1

# result rows
R_TOKEN, R_EMITTED, R_DONE, R_FINISH, R_THINK_USED, R_WAITS_USED, R_PHASE = range(7)
NUM_RESULT = 7

UNLIMITED = 2 ** 62


class ForceTables(NamedTuple):
    state: torch.Tensor
    fparams: torch.Tensor
    forced: torch.Tensor
    stop: torch.Tensor
    think_end: torch.Tensor
    newline: torch.Tensor
    end_rules: torch.Tensor | None = None


def end_rules_of(tables: ForceTables) -> torch.Tensor:
    """[3, M2] int64 end rules (rows: id, predecessor or -1, keep flag); the default when the
    tables carry none: every think_end id, no predecessor, dropped."""
    if tables.end_rules is not None:
        return tables.end_rules
    ids = tables.think_end.to(torch.int64).reshape(-1)
    return torch.stack([ids, torch.full_like(ids, -1), torch.zeros_like(ids)])


RULE_ID, RULE_PREV, RULE_KEEP = 0, 1, 2
