"""Budget forcing at the token-id level with a scripted logits source (s1's rules).

The scripted "model" wants token SCRIPT[pos] at output position pos (default 5) with logit 10;
token 6 is its second choice (logit 5), so masking an end token yields 6. A padded vocabulary
id (47 >= vocab_size 45) gets the highest logit of all and must never appear.
Ids: end-of-thinking {40 <|im_start|>, 41 <|im_end|>, 42 <|endoftext|>}; answer stops {41, 42};
natural-end delimiter DELIM = [40, 30] ("<|im_start|>" "answer": the model writes what follows);
"Wait" = [20]; forced end END = [31, 40, 30, 31, 23, 24] ("\n<|im_start|>answer\nFinal Answer:"),
whose leading "\n" (31, the only id whose text ends with a newline here) is dropped when the
thinking already ends with one. With extensions (num_wait > 0) the first thinking token and the
first token after each extension may not be an end token (s1's min_tokens=1).
Expected sequences below are written out by hand from the rules in s1/kernels/force_state.py.
"""
import random

import pytest
import torch
import torch.nn as nn

from s1 import kernels
from s1.infer.budget import BudgetState, RequestRules, SpecialTokens
from s1.kernels import force_state as fs
from s1.kernels import reference
from s1.kernels.reference import filtered_choices, uniform_noise

V, VOCAB = 48, 45
NEWLINE = bytes(1 if i == 31 else 0 for i in range(VOCAB))
SP = SpecialTokens(think_end_ids=[40, 41, 42], answer_stop_ids=[41, 42], delimiter_ids=[40, 30],
                   newline_id=31, pad_id=42, vocab_size=VOCAB, newline_table=NEWLINE)
END = [31, 40, 30, 31, 23, 24]
DELIM = [40, 30]
WAIT = [20]


def rules(**kw):
    base = dict(thinking=True, extension_ids=WAIT, end_ids=END, end_skip_newline=True, stop_ids=[41, 42])
    base.update(kw)
    return RequestRules(**base)


def make_state(rule_list) -> BudgetState:
    st = BudgetState(len(rule_list), SP, "cpu", reference)
    st.admit(list(range(len(rule_list))), rule_list)
    return st


def col(st: BudgetState, c: int) -> torch.Tensor:
    return st.tables.state[:, c]


def scripted_logits(scripts, rows, state):
    pos = col(state, fs.OUT_COUNT)[rows].tolist()
    x = torch.full((len(rows), V), -5.0)
    x[:, 6] = 5.0
    x[:, 47] = 100.0   # padded embedding row: must be masked
    for i, (r, p) in enumerate(zip(rows.tolist(), pos)):
        x[i, scripts[r].get(p, 5)] = 10.0
    return x


def run(rule_list, scripts, max_steps=60, shuffle=False, seed=0):
    """Step every unfinished row; with shuffle, random subsets in random order (as continuous
    batching / preemption would). Returns per row (tokens, think_used, waits_used, finish)."""
    st = make_state(rule_list)
    n = len(rule_list)
    toks = [[] for _ in range(n)]
    done = [False] * n
    rng = random.Random(seed)
    for _ in range(max_steps * 3):
        live = [r for r in range(n) if not done[r]]
        if not live:
            break
        if shuffle:
            rng.shuffle(live)
            live = live[:max(1, rng.randint(1, len(live)))]
        rows = torch.tensor(live)
        info = st.step(scripted_logits(scripts, rows, st), rows, filtered=False)
        for j, r in enumerate(live):
            tok, emitted, d = info[fs.R_TOKEN, j].item(), info[fs.R_EMITTED, j].item(), info[fs.R_DONE, j].item()
            if emitted:
                toks[r].append(tok)
            done[r] = bool(d)
    assert all(done), "scripted run did not finish"
    fin_names = {1: "stop", 2: "answer_len", 3: "max_tokens"}
    return [(toks[r], int(col(st, fs.THINK_USED)[r]), int(col(st, fs.WAITS_USED)[r]),
             fin_names[int(col(st, fs.FINISH)[r])]) for r in range(n)]


# (rules, script {pos: wanted token}, expected tokens, thinking tokens, waits used, finish)
CASES = {
    "max_only": (rules(max_think=5), {13: 41},
                 [5] * 5 + END + [5, 5, 41], 5, 0, "stop"),
    "min_only": (rules(min_think=4), {1: 40, 3: 41, 6: 42, 11: 41},
                 [5, 6, 5, 6, 5, 5] + DELIM + [5, 5, 5, 41], 6, 0, "stop"),
    "wait0": (rules(num_wait=0), {2: 40, 8: 41},
              [5, 5] + DELIM + [5, 5, 5, 5, 41], 2, 0, "stop"),
    "wait1": (rules(num_wait=1), {2: 40, 4: 40, 9: 41},
              [5, 5, 20, 5] + DELIM + [5, 5, 5, 41], 4, 1, "stop"),
    # an end attempt right after an extension (pos 2) is masked: the second choice 6, no WaitWait
    "wait3": (rules(num_wait=3), {1: 40, 2: 41, 4: 42, 6: 40, 10: 41, 14: 41},
              [5, 20, 6, 5, 20, 5, 20, 5, 5, 5] + DELIM + [5, 5, 41], 10, 3, "stop"),
    # with extensions the very first thinking token may not end thinking either (s1's first round)
    "first_token_end_masked_with_waits": (rules(num_wait=1), {0: 40, 3: 41, 6: 40, 9: 41},
                                          [6, 5, 5, 20, 5, 5] + DELIM + [5, 41], 6, 1, "stop"),
    "first_token_end_without_waits": (rules(num_wait=0), {0: 41, 3: 41},
                                      DELIM + [5, 41], 0, 0, "stop"),
    "wait3_cap_first": (rules(num_wait=3, max_think=6, max_answer=2), {2: 40, 7: 41},
                        [5, 5, 20, 5, 5, 5] + END + [5, 5], 6, 1, "answer_len"),
    "multi_token_extension": (rules(num_wait=2, extension_ids=[20, 21, 22]), {1: 40, 5: 41, 9: 40, 13: 41},
                              [5, 20, 21, 22, 5, 20, 21, 22, 5] + DELIM + [5, 5, 41], 9, 2, "stop"),
    "cap_mid_extension": (rules(num_wait=1, max_think=4, extension_ids=[20, 21, 22], max_answer=1), {2: 40},
                          [5, 5, 20, 21] + END + [5], 4, 1, "answer_len"),
    "cap_at_extension_end": (rules(num_wait=1, max_think=5, extension_ids=[20, 21, 22], max_answer=1), {2: 40},
                             [5, 5, 20, 21, 22] + END + [5], 5, 1, "answer_len"),
    # the thinking already ends with a newline at the cap: the forced end's "\n" is not inserted
    "cap_after_newline": (rules(max_think=3, max_answer=1), {2: 31},
                          [5, 5, 31] + END[1:] + [5], 3, 0, "answer_len"),
    "max_tokens_mid_forced_end": (rules(max_think=5, max_tokens=8), {},
                                  [5] * 5 + END[:3], 5, 0, "max_tokens"),
    "max_think_zero": (rules(max_think=0), {7: 42},
                       END + [5, 42], 0, 0, "stop"),
    "max_think_zero_after_newline_prompt": (rules(max_think=0, last_prompt_token=31), {6: 42},
                                            END[1:] + [5, 42], 0, 0, "stop"),
    "min_equals_max": (rules(min_think=3, max_think=3, max_answer=1), {1: 40, 2: 41},
                       [5, 6, 6] + END + [5], 3, 0, "answer_len"),
    "empty_extension_masks": (rules(num_wait=1, extension_ids=[]), {2: 40, 4: 40, 8: 41},
                              [5, 5, 6, 5] + DELIM + [5, 5, 41], 4, 1, "stop"),
    "answer_delim_then_max_answer_zero": (rules(max_answer=0), {1: 41},
                                          [5] + DELIM, 1, 0, "answer_len"),
    "answer_im_start_is_not_a_stop": (rules(num_wait=0), {0: 40, 4: 40, 6: 42},
                                      DELIM + [5, 5, 40, 5, 42], 0, 0, "stop"),
    "plain": (rules(thinking=False), {3: 41}, [5, 5, 5, 41], 0, 0, "stop"),
    "plain_ignore_eos": (rules(thinking=False, stop_ids=[], max_tokens=5), {3: 41},
                         [5, 5, 5, 41, 5], 0, 0, "max_tokens"),
    "extra_stop_token": (rules(thinking=False, stop_ids=[41, 42, 9]), {2: 9}, [5, 5, 9], 0, 0, "stop"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_exact_sequences(name):
    r, script, toks, think, waits, fin = CASES[name]
    assert run([r], [script])[0] == (toks, think, waits, fin)


@pytest.mark.parametrize("shuffle", [False, True], ids=["lockstep", "shuffled_subsets"])
def test_mixed_batch_per_request_rules(shuffle):
    names = sorted(CASES)
    out = run([CASES[n][0] for n in names], [CASES[n][1] for n in names], shuffle=shuffle, seed=3)
    for n, got in zip(names, out):
        assert got == CASES[n][2:], n


def test_forced_tokens_ignore_logits_and_finished_rows_emit_nothing():
    st = make_state([rules(max_think=1)])
    rows = torch.tensor([0])
    seen = []
    g = torch.Generator().manual_seed(0)
    for _ in range(12):
        x = torch.randn(1, V, generator=g)
        x[:, 31] = -50.0            # the first (thinking) token is not a newline: the full END follows
        info = st.step(x, rows, filtered=False)  # arbitrary logits: forced tokens must not care
        seen.append(info[:, 0].tolist())
    toks = [s[fs.R_TOKEN] for s in seen if s[fs.R_EMITTED]]
    assert toks[1:7] == END
    assert all(s[fs.R_EMITTED] == 0 and s[fs.R_TOKEN] == SP.pad_id for s in seen[len(toks):])


# ---------------------------------------------------------------------------- sampling
def test_noise_depends_only_on_seed_and_position():
    a = uniform_noise(torch.tensor([7, 8, 7]), torch.tensor([3, 3, 3]), 1000)
    assert torch.equal(a[0], a[2]) and not torch.equal(a[0], a[1])
    b = uniform_noise(torch.tensor([7]), torch.tensor([4]), 1000)
    assert not torch.equal(a[0], b[0])
    assert 0 < float(a.min()) and float(a.max()) < 1


def _choices(x, inv_t, top_k, top_p, seeds, pos):
    return filtered_choices(x, inv_t, top_k, top_p, seeds, pos, x.shape[1], torch.tensor([], dtype=torch.long))[0]


def test_gumbel_race_matches_softmax_distribution():
    n = 6000
    logits = torch.tensor([1.0, 0.0, -1.0, 2.0])
    T = 0.7
    t = _choices(logits.expand(n, 4).clone(), torch.full((n,), 1 / T), torch.zeros(n, dtype=torch.long),
                 torch.ones(n), torch.arange(n), torch.zeros(n, dtype=torch.long))
    freq = torch.bincount(t, minlength=4).float() / n
    p = torch.softmax(logits / T, 0)
    sigma = (p * (1 - p) / n).sqrt()
    assert ((freq - p).abs() < 4 * sigma + 1e-3).all(), (freq, p)


def test_top_k_and_top_p_filters():
    n = 2000
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))
    seeds, pos = torch.arange(n), torch.zeros(n, dtype=torch.long)
    x = logits.expand(n, 4).clone()
    k2 = _choices(x, torch.ones(n), torch.full((n,), 2), torch.ones(n), seeds, pos)
    assert set(k2.tolist()) == {0, 1}
    p = _choices(x, torch.ones(n), torch.zeros(n, dtype=torch.long), torch.full((n,), 0.75), seeds, pos)
    assert set(p.tolist()) == {0, 1}  # mass before token 2 is 0.8 >= 0.75 -> cut
    p1 = _choices(x, torch.ones(n), torch.zeros(n, dtype=torch.long), torch.full((n,), 0.4), seeds, pos)
    assert set(p1.tolist()) == {0}
    # greedy rows ignore noise and filters
    g = _choices(x, torch.zeros(n), torch.full((n,), 2), torch.full((n,), 0.4), seeds, pos)
    assert set(g.tolist()) == {0}


@pytest.mark.parametrize("filt", [dict(top_p=0.5), dict(top_k=1), dict(top_k=3, top_p=0.6)])
def test_masked_end_tokens_are_removed_before_top_k_top_p(filt):
    """Below the minimum, and when an empty extension suppresses an end attempt, the end tokens
    leave the distribution *before* top-k/top-p: sampling is from the nucleus of the renormalized
    rest, which is never empty. Logits: end token 40 at 10 (alone it is the whole nucleus of the
    unmasked distribution), token 7 at 2, token 8 at 1, the other 40 real tokens at -5. Without the
    end tokens p(7) = e^2 / (e^2 + e + 40 e^-5) = 0.71, so top_p 0.5, top_k 1 and (top_k 3,
    top_p 0.6) all leave {7} alone; unfiltered sampling at T=1 reaches 7, 8 and the rest."""
    n = 64
    x = torch.full((n, V), -5.0)
    x[:, 40], x[:, 7], x[:, 8] = 10.0, 2.0, 1.0
    x[:, 47] = 100.0                                           # padded id, never sampled
    below_min = [rules(min_think=5, temperature=1.0, seed=s, **filt) for s in range(n // 2)]
    empty_ext = [rules(num_wait=1, extension_ids=[], temperature=1.0, seed=s, **filt) for s in range(n // 2)]
    st = make_state(below_min + empty_ext)
    col(st, fs.MASK_NEXT).zero_()   # a later thinking step (s1's min_tokens=1 masks only a round's first token)
    info = st.step(x.clone(), torch.arange(n), filtered=True)
    assert info[fs.R_TOKEN].tolist() == [7] * n
    assert col(st, fs.WAITS_USED)[n // 2:n].tolist() == [1] * (n // 2)  # the end attempt counted as a wait
    # without a filter the masked sample follows the renormalized distribution (not only token 7)
    st = make_state([rules(min_think=5, temperature=1.0, seed=s) for s in range(400)])
    toks = st.step(torch.cat([x[:1]] * 400), torch.arange(400), filtered=False)[fs.R_TOKEN]
    assert not set(toks.tolist()) & {40, 41, 42, 47} and {7, 8} <= set(toks.tolist())
    assert 0.6 < (toks == 7).float().mean() < 0.82


def test_sampling_row_independent_of_batch():
    r = [rules(thinking=False, temperature=1.0, seed=s, max_tokens=30, stop_ids=[]) for s in (11, 22, 33)]
    def go(rule_list, scripts_rows):
        st = make_state(rule_list)
        g = torch.Generator().manual_seed(0)
        logits = torch.randn(30, V, generator=g)  # logits by position, shared by all rows
        out = [[] for _ in rule_list]
        for _ in range(30):
            rows = torch.arange(len(rule_list))
            info = st.step(logits[col(st, fs.OUT_COUNT)[rows]], rows, filtered=False)
            for j in range(len(rule_list)):
                out[j].append(int(info[0, j]))
        return out
    alone = go([r[1]], None)[0]
    batch = go(r, None)
    assert batch[1] == alone and batch[0] != batch[1]
    assert max(alone) < VOCAB


# ---------------------------------------------------------------------------- through the engine
class ScriptedModel(nn.Module):
    """Stands in for Qwen2ForCausalLM: logits depend only on the output position (prompts all have
    length PROMPT_LEN), so the engine's prefill/decode/forcing plumbing is exercised end to end."""

    def __init__(self, cfg, script, prompt_len):
        super().__init__()
        self.config = cfg
        self.dummy = nn.Parameter(torch.zeros(1))
        self.script, self.prompt_len = script, prompt_len

    def forward(self, input_ids, positions, kv_cache=None, logits_indices=None, **_):
        pos = positions if logits_indices is None else positions[logits_indices]
        out_pos = (pos + 1 - self.prompt_len).tolist()
        x = torch.full((len(out_pos), self.config.vocab_size), -5.0)
        x[:, self.fallback] = 5.0
        for i, p in enumerate(out_pos):
            x[i, self.script.get(p, self.default)] = 10.0
        return x


@pytest.mark.parametrize("async_output", [False, True], ids=["sync", "async"])
def test_engine_with_scripted_model(shared_data, async_output):
    from s1.infer import LLM, SamplingParams
    from s1.model.config import Qwen2Config
    from s1.model.tokenizer import Tokenizer
    tok = Tokenizer.from_pretrained(shared_data / "qwen2.5-tokenizer")
    im_start, im_end = tok.token_id("<|im_start|>"), tok.token_id("<|im_end|>")
    wait = tok.encode("Wait")
    end = tok.encode("\n<|im_start|>answer\nFinal Answer:")
    delim = tok.encode("<|im_start|>answer")
    word, other = tok.encode(" so")[0], tok.encode(" then")[0]
    cfg = Qwen2Config(vocab_size=151936, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=256)
    prompt = tok.encode("<|im_start|>user\nq<|im_end|>\n<|im_start|>assistant\n<|im_start|>think")
    script = {2: im_start, 4: im_end, 9: im_end, 14: im_end}
    m = ScriptedModel(cfg, script, len(prompt))
    m.default, m.fallback = word, other
    with kernels.use_backend("torch"):
        llm = LLM(model=m, tokenizer=tok, page_size=4, num_pages=64, max_model_len=256,
                  async_output=async_output)
        params = [SamplingParams(num_wait=1), SamplingParams(max_thinking_tokens=2, max_answer_tokens=1),
                  SamplingParams(min_thinking_tokens=5, num_wait=0), SamplingParams(num_wait=2)]
        outs = llm.generate([prompt] * 4, params, use_tqdm=False)
    o = outs[0]  # wait at pos 2 (pos 0 and 3 may not end); pos 4 ends -> delimiter; answer until <|im_end|> at pos 9
    assert o.output_token_ids == [word, word] + wait + [word] + delim + [word] * (9 - 4 - len(delim)) + [im_end]
    assert (o.num_thinking_tokens, o.num_waits_used, o.finish_reason) == (4, 1, "stop")
    assert o.thinking == tok.decode([word, word] + wait + [word])
    assert o.answer == tok.decode([word] * (9 - 4 - len(delim)))
    o = outs[1]
    a = script.get(2 + len(end), word)  # the one answer token allowed (max_answer_tokens=1)
    assert o.output_token_ids == [word, word] + end + [a]   # cap before the end attempt at pos 2
    assert (o.num_thinking_tokens, o.finish_reason) == (2, "stop" if a == im_end else "length")
    assert o.answer == "Final Answer:" + ("" if a == im_end else tok.decode([a]))
    o = outs[2]  # ends masked at pos 2 and 4 (fallback token), then pos 9 ends thinking
    assert o.output_token_ids[:9] == [word, word, other, word, other] + [word] * 4
    assert o.output_token_ids[9:9 + len(delim)] == delim and o.num_thinking_tokens == 9
    o = outs[3]  # waits at 2 and 4; pos 9 ends -> delimiter
    assert o.output_token_ids[:9] == [word, word] + wait + [word] + wait + [word] * 4
    assert (o.num_thinking_tokens, o.num_waits_used) == (9, 2)
