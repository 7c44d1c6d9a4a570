"""Online serving benchmark for `s1 serve`: the standard client-side measurement.

Requests go to /v1/completions as streams, with Poisson arrivals at each request rate of --rates
(inf: all at once) or from --concurrency clients in a closed loop. Prompts follow nano-vllm's
distribution (random token ids, input and output lengths uniform in --input-len / --output-len,
random.seed(--seed)) or come from a JSONL file (--dataset: "prompt" and optional "max_tokens").
Every request is greedy and ignores EOS, so its output is exactly its length: budget forcing
"off" is plain generation; "on" gives the same request a thinking cap of output length - 24 (the
forced "\\n<|im_start|>answer\\nFinal Answer:" is 7 tokens, the rest is answer) and num_wait 2, so
both modes produce the same token counts and the difference is the cost of the on-device state
machine and forced tokens.

Reported per rate and mode: completed / failed requests, duration, throughput (req/s, output
tok/s), time to first token (TTFT), time per output token after the first (TPOT: vLLM's
(E2E - TTFT) / (tokens - 1)) and end-to-end latency, each as mean, median and p99 (ms); and, under `vllm bench serve`'s names (README
"Serving"), request / output / total token throughput, request_goodput under --goodput SLOs, and
mean / median / std / --percentiles of TTFT, TPOT, ITL and E2E latency (linear interpolation,
numpy's and vLLM's rule). Arrivals: gamma gaps of mean 1/rate and shape --burstiness (1: Poisson),
--max-concurrency requests in flight at most. Datasets (--dataset-name): random ids, a JSONL of
prompts, a ShareGPT-format file, or reasoning questions sent as chat requests with a thinking
budget. Works against any OpenAI-compatible streaming server (--url; --plain for one that refuses
our extra fields), so ours and vLLM can be timed side by side. With --verify (on in --smoke and --load-test) every
response is checked: it ends with [DONE], has exactly max_tokens token ids, its text is the decode
of those ids, and a prompt sent again returns the same ids (greedy): a lost, cut or mixed-up
response counts as corrupted.

    python -m bench.serve --smoke                        # CPU: a tiny random checkpoint it makes, seconds
    python -m bench.serve --shape 0.5B --rates 4,16,64,inf --num-prompts 256     # GPU
    python -m bench.serve --model DIR --concurrency 32 --num-prompts 512
    python -m bench.serve --url http://127.0.0.1:8000 --rates 2,8       # a server already running
    python -m bench.serve --url URL --rates 1,4,inf --percentiles 90,95,99 --goodput ttft:500 tpot:50 --plot
    python -m bench.serve --url URL --dataset-name reasoning --thinking-budget 8192 --rates 2
    python -m bench.serve --smoke --load-test --concurrency 16 --duration 30   # N clients for T seconds
    python -m bench.serve --smoke --faults 0.05,0.05 --num-prompts 600 --rates inf --budget-forcing on

--faults DROP,BAD (issue 24): a fraction DROP of the clients goes away mid-stream (after a random
number of chunks) and a fraction BAD sends a bad request instead (one of BAD_BODIES: huge integers,
NaN, a misspelled field, wrong types...), which must get a 400 naming a field. Every other request
must still be answered exactly (--verify); afterwards /health must be ok with every KV page free.

Without --url the script starts `python -m s1.serve` itself on a free loopback port (a random-weight
checkpoint of --shape written to a temporary folder with the Qwen2.5 tokenizer from ../shared/data,
or --model) and stops it with SIGTERM at the end (its exit status is recorded). Results: a
markdown table on stdout and bench/results/serve_<tag>.{json,md} (--out) with device, commit,
versions and date (common.env.environment()).
"""
from __future__ import annotations

import argparse
import asyncio
import importlib.util
import json
import math
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field

from s1.common.cli import HelpFormatter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORCED_END_TOKENS = 7      # "\n<|im_start|>answer\nFinal Answer:"
ANSWER_TOKENS = 16


def _range(v: str) -> tuple[int, int]:
    a, _, b = v.partition(":")
    lo, hi = int(a), int(b or a)
    if not 1 <= lo <= hi:
        raise argparse.ArgumentTypeError(f"{v!r}: expected LO:HI with 1 <= LO <= HI")
    return lo, hi


def _rates(v: str) -> list[float]:
    out = []
    for x in v.split(","):
        x = x.strip().lower()
        out.append(math.inf if x in ("inf", "infinity") else float(x))
        if out[-1] <= 0:
            raise argparse.ArgumentTypeError(f"rate {x}: must be > 0")
    return out


def _percentiles(v: str) -> list[float]:
    try:
        out = [float(x) for x in v.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{v!r}: expected a comma list of numbers, e.g. 90,95,99") from None
    if not out or any(not 0 < p < 100 for p in out):
        raise argparse.ArgumentTypeError(f"{v!r}: percentiles must lie in (0, 100)")
    return out


GOODPUT_KEYS = ("ttft", "tpot", "e2el")
DATASETS = ("random", "jsonl", "sharegpt", "reasoning")


def parse_goodput(items: list[str] | None) -> dict[str, float]:
    """["ttft:500", "tpot:50"] -> {"ttft": 500.0, "tpot": 50.0} (ms); ValueError naming the bad item."""
    slos = {}
    for it in items or []:
        k, sep, v = it.partition(":")
        if not sep or k not in GOODPUT_KEYS:
            raise ValueError(f"--goodput {it}: expected KEY:MS with KEY one of {', '.join(GOODPUT_KEYS)}")
        try:
            ms = float(v)
        except ValueError:
            raise ValueError(f"--goodput {it}: {v!r} is not a number of milliseconds") from None
        if not ms > 0 or not math.isfinite(ms):
            raise ValueError(f"--goodput {it}: the SLO must be a positive number of ms")
        slos[k] = ms
    return slos


# ----------------------------------------------------------------------------- statistics
def percentile(xs, p: float) -> float:
    """The p-th percentile with linear interpolation between order statistics (numpy's default,
    which vLLM's benchmark uses)."""
    s = sorted(xs)
    if not s:
        raise ValueError("percentile of no values")
    h = (len(s) - 1) * p / 100.0
    lo = math.floor(h)
    hi = min(lo + 1, len(s) - 1)
    return s[lo] + (h - lo) * (s[hi] - s[lo])


def summarize(xs_s: list[float], percentiles: list[float]) -> dict:
    """Seconds -> {mean, median, std, p<P>} in ms (vLLM's population std); None each when empty."""
    keys = ["mean", "median", "std"] + [f"p{_pname(p)}" for p in percentiles]
    if not xs_s:
        return dict.fromkeys(keys)
    ms = [1e3 * x for x in xs_s]
    out = {"mean": statistics.fmean(ms), "median": percentile(ms, 50), "std": statistics.pstdev(ms)}
    for p in percentiles:
        out[f"p{_pname(p)}"] = percentile(ms, p)
    return out


def _pname(p: float) -> str:
    return str(int(p)) if float(p).is_integer() else str(p)


def good_requests(results: list, slos: dict[str, float]) -> int:
    """Requests that meet every SLO given (ms): ttft, tpot (a one-token request has none: it meets
    it), e2el -- vLLM's goodput rule."""
    n = 0
    for r in results:
        vals = {"ttft": r.ttft, "tpot": r.tpot if r.tpot is not None else 0.0, "e2el": r.latency}
        if all(vals[k] is not None and 1e3 * vals[k] <= slo for k, slo in slos.items()):
            n += 1
    return n


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m bench.serve", formatter_class=HelpFormatter,
                                 description=__doc__.split("\n\n")[0], epilog="\n\n".join(__doc__.split("\n\n")[1:]))
    src = ap.add_argument_group("server")
    src.add_argument("--url", default=None, help="benchmark this running server instead of starting one")
    src.add_argument("--model", default=None, help="checkpoint folder for the server it starts")
    src.add_argument("--shape", default=None,
                     help="random-weight Qwen2.5 shape (0.5B, 1.5B, 7B, ...) for the server it starts; "
                          "default 0.5B (--smoke: a tiny one)")
    src.add_argument("--device", default="auto", help="the started server's --device")
    src.add_argument("--dtype", default="auto", help="the started server's --dtype (random shapes: bfloat16 on GPU)")
    src.add_argument("--max-num-seqs", type=int, default=256, help="the started server's --max-num-seqs")
    src.add_argument("--max-model-len", type=int, default=4096, help="the started server's --max-model-len")
    src.add_argument("--api-key", default=None, help="bearer token to send")
    wl = ap.add_argument_group("workload")
    wl.add_argument("--rates", "--request-rate", type=_rates, default=[1.0, 4.0, 16.0, math.inf],
                    help="request rates in req/s, a comma list = a sweep (Poisson arrivals, or gamma with "
                         "--burstiness); inf sends all at once")
    wl.add_argument("--burstiness", type=float, default=1.0,
                    help="vLLM's: arrival gaps are gamma(shape=B, mean=1/rate); 1 = Poisson, < 1 burstier, > 1 "
                         "more regular")
    wl.add_argument("--max-concurrency", type=int, default=None,
                    help="vLLM's: at most this many requests in flight; arrivals beyond it wait (open loop "
                         "otherwise unchanged, unlike --concurrency's closed loop)")
    wl.add_argument("--concurrency", type=int, default=None,
                    help="instead of --rates: this many clients, each sending its next request when the last ends")
    wl.add_argument("--num-prompts", type=int, default=200, help="requests per rate (and mode)")
    wl.add_argument("--duration", type=float, default=None,
                    help="with --concurrency: run for this many seconds instead of --num-prompts requests")
    wl.add_argument("--input-len", type=_range, default=(100, 1024), metavar="LO:HI",
                    help="prompt lengths in tokens, uniform (nano-vllm's distribution)")
    wl.add_argument("--output-len", type=_range, default=(100, 1024), metavar="LO:HI",
                    help="output lengths in tokens, uniform (nano-vllm's distribution)")
    wl.add_argument("--dataset", "--dataset-path", default=None,
                    help='the --dataset-name file: jsonl: {"prompt": str or token ids, "max_tokens": optional} per '
                         'line; sharegpt: a JSON list of {"conversations": [{"from": "human", "value"}, {"from": '
                         '"gpt", "value"}, ...]}; reasoning: JSONL with "problem" / "question" / "prompt" '
                         '(default: ../shared/data/eval/aime24)')
    wl.add_argument("--dataset-name", default=None, choices=DATASETS,
                    help="random: random token ids of --input-len / --output-len (default); jsonl; sharegpt: first "
                         "human turn as the prompt, the reply's token count as max_tokens (with a tokenizer, else "
                         "--output-len); reasoning: questions as chat requests with budget forcing "
                         "(--thinking-budget, --num-wait), answers ending at EOS")
    wl.add_argument("--endpoint", default=None, choices=("completions", "chat"),
                    help="/v1/completions or /v1/chat/completions (default: chat for reasoning, else completions)")
    wl.add_argument("--thinking-budget", type=int, default=None,
                    help="reasoning: the thinking cap (default 8192; --smoke 24); max_tokens = cap + --output-len")
    wl.add_argument("--thinking-field", default="max_thinking_tokens",
                    help="reasoning: the request field of the cap (vLLM: thinking_token_budget)")
    wl.add_argument("--num-wait", type=int, default=0, help="reasoning: s1's \"Wait\" extensions (num_wait)")
    wl.add_argument("--tokenizer", default=None,
                    help="tokenizer folder for sharegpt reply lengths and --verify (default: the started server's)")
    wl.add_argument("--plain", action="store_true",
                    help="send only OpenAI fields (+ ignore_eos), for servers that refuse ours (no return_token_ids, "
                         "no budget-forcing fields except --thinking-field; --verify off)")
    wl.add_argument("--budget-forcing", default=None,
                    help="modes to run, a comma list of off (plain generation) and on (thinking cap = output - 24, "
                         "num_wait 2); default: off,on (--load-test: on)")
    wl.add_argument("--seed", type=int, default=0, help="seed of the prompts and the arrivals")
    wl.add_argument("--verify", action="store_true", help="check every response (see above)")
    wl.add_argument("--faults", default=None, metavar="DROP,BAD",
                    help="fractions of clients that drop mid-stream / send bad requests (e.g. 0.05,0.05)")
    out = ap.add_argument_group("modes and output")
    out.add_argument("--percentiles", "--metric-percentiles", type=_percentiles, default=[99.0],
                     help="percentiles reported for TTFT, TPOT, ITL and E2E latency (vLLM's --metric-percentiles), "
                          "e.g. 90,95,99")
    out.add_argument("--goodput", nargs="+", default=None, metavar="KEY:MS",
                     help="SLOs in ms, e.g. ttft:500 tpot:50 (keys ttft, tpot, e2el): request_goodput counts the "
                          "requests that meet every SLO given, per second")
    out.add_argument("--plot", action="store_true",
                     help="also write <out>_latency.png: TTFT / TPOT / ITL / E2E percentiles against request rate")
    out.add_argument("--smoke", action="store_true",
                     help="CPU check of the script: tiny random checkpoint, 16 short prompts, rates 8,inf")
    out.add_argument("--load-test", action="store_true",
                     help="bounded load test: --concurrency clients (default 16) for --duration seconds "
                          "(default 20), budget forcing on, --verify; fails on any lost or corrupted response")
    out.add_argument("--out", default=None,
                     help="results path without extension (writes .json and .md); default "
                          "bench/results/serve_<tag>; 'none' writes nothing")
    return ap


# ----------------------------------------------------------------------------- workload
@dataclass
class Req:
    index: int
    prompt: object                 # str or token ids
    max_tokens: int
    input_len: int
    exact: bool = True             # ignore_eos: exactly max_tokens tokens come back (what --verify checks)
    reasoning: bool = False        # a question with budget forcing (dataset "reasoning")


@dataclass
class Opts:
    """How requests are sent (from the command line; defaults: our server, /v1/completions)."""
    endpoint: str = "completions"
    plain: bool = False
    thinking_field: str = "max_thinking_tokens"
    thinking_budget: int = 8192
    num_wait: int = 0
    burstiness: float = 1.0
    max_concurrency: int | None = None
    percentiles: tuple = (99.0,)
    goodput: dict = field(default_factory=dict)


def dataset_name(a) -> str:
    return a.dataset_name or ("jsonl" if a.dataset else "random")


def _sharegpt(a, rng, tok) -> list[Req]:
    with open(a.dataset) as f:
        data = json.load(f)
    if not isinstance(data, list):
        raise SystemExit(f"bench.serve: {a.dataset}: a ShareGPT file is a JSON list of {{\"conversations\": [...]}}")
    pairs = []
    for conv in data:
        turns = conv.get("conversations") or conv.get("conversation") or [] if isinstance(conv, dict) else []
        if len(turns) < 2 or not all(isinstance(t, dict) for t in turns[:2]):
            continue
        q, r = turns[0].get("value", turns[0].get("content")), turns[1].get("value", turns[1].get("content"))
        if isinstance(q, str) and isinstance(r, str) and q.strip():
            pairs.append((q, r))
    if not pairs:
        raise SystemExit(f"bench.serve: {a.dataset}: no conversation with a first turn and a reply")
    rng.shuffle(pairs)
    out = []
    for i in range(a.num_prompts):
        q, r = pairs[i % len(pairs)]
        n_out = len(tok.encode(r)) if tok is not None else rng.randint(*a.output_len)
        n_in = len(tok.encode(q)) if tok is not None else -1
        out.append(Req(i, q, max(1, min(n_out, a.max_model_len // 2)), n_in))
    return out


def _reasoning(a, rng) -> list[Req]:
    from s1.common.jsonl import read_jsonl
    path = a.dataset
    if path is None:
        from s1.common.paths import shared_data_dir
        path = shared_data_dir() / "eval" / "aime24" / "test.jsonl"
    rows = read_jsonl(path)
    qs = [r.get("problem") or r.get("question") or r.get("prompt") for r in rows]
    qs = [q for q in qs if isinstance(q, str) and q.strip()]
    if not qs:
        raise SystemExit(f"bench.serve: {path}: no row with a \"problem\", \"question\" or \"prompt\" string")
    budget = a.thinking_budget
    return [Req(i, qs[i % len(qs)], budget + rng.randint(*a.output_len), -1, exact=False, reasoning=True)
            for i in range(a.num_prompts)]


def make_workload(a, vocab: int = 10000, tok=None) -> list[Req]:
    rng = random.Random(a.seed)
    name = dataset_name(a)
    if name == "sharegpt":
        return _sharegpt(a, rng, tok)
    if name == "reasoning":
        return _reasoning(a, rng)
    if name == "jsonl":
        from s1.common.jsonl import read_jsonl
        rows = read_jsonl(a.dataset)
        out = []
        for i, r in enumerate(rows):
            mt = r.get("max_tokens") or rng.randint(*a.output_len)
            p = r["prompt"]
            out.append(Req(i, p, int(mt), len(p) if isinstance(p, list) else -1))
        return out
    n = a.num_prompts
    return [Req(i, [rng.randint(0, vocab - 1) for _ in range(rng.randint(*a.input_len))],
                rng.randint(*a.output_len), 0) for i in range(n)]


def body_of(req: Req, model: str, bf: bool, opts: Opts | None = None, tok=None) -> dict:
    o = opts or Opts()
    b = {"model": model, "max_tokens": req.max_tokens, "temperature": 0, "ignore_eos": req.exact,
         "stream": True, "stream_options": {"include_usage": True}}
    if o.endpoint == "chat":
        text = req.prompt
        if not isinstance(text, str):
            if tok is None:
                raise SystemExit("bench.serve: --endpoint chat with token-id prompts needs --tokenizer")
            text = tok.decode(text)
        b["messages"] = [{"role": "user", "content": text}]
    else:
        b["prompt"] = req.prompt
    if not o.plain:
        b["return_token_ids"] = True
    if req.reasoning:
        b[o.thinking_field] = o.thinking_budget
        if o.num_wait:
            b["num_wait"] = o.num_wait
    elif bf:
        b.update(max_thinking_tokens=max(0, req.max_tokens - FORCED_END_TOKENS - ANSWER_TOKENS), num_wait=2)
    return b


# ----------------------------------------------------------------------------- client
@dataclass
class Result:
    index: int
    ok: bool = False
    error: str | None = None
    ttft: float | None = None
    latency: float | None = None
    tpot: float | None = None
    output_tokens: int = 0
    ids: list = field(default_factory=list)
    text: str = ""
    finish: str | None = None
    done: bool = False
    itl: list = field(default_factory=list)       # seconds between successive chunks with output
    input_tokens: int | None = None               # usage.prompt_tokens


# (body fields replacing a good request's, the field the 400 must name)
BAD_BODIES = [({"max_thinking_tokens": 9223372036854775808}, "max_thinking_tokens"),
              ({"min_thinking_tokens": 2 ** 63}, "min_thinking_tokens"), ({"num_wait": 2 ** 64}, "num_wait"),
              ({"max_answer_tokens": 2 ** 63}, "max_answer_tokens"), ({"top_k": 2 ** 63}, "top_k"),
              ({"seed": 2 ** 64}, "seed"), ({"temperature": float("nan")}, "temperature"),
              ({"temperature": 1e-39, "top_p": float("inf")}, "top_p"), ({"max_thinking_token": 5}, "max_thinking_token"),
              ({"n": 10 ** 6}, "n"), ({"stop": ["x"] * 100}, "stop"), ({"prompt": [2 ** 40]}, "prompt"),
              ({"max_tokens": -1}, "max_tokens"), ({"stream": "yes"}, "stream")]


async def send_bad(client, req: Req, body: dict, k: int) -> Result:
    """A bad request: it must get a 400 whose error names the field (then `ok`)."""
    fields, param = BAD_BODIES[k % len(BAD_BODIES)]
    res = Result(req.index)
    try:
        r = await client.post("/v1/completions", content=json.dumps({**body, **fields}).encode(),
                              headers={"content-type": "application/json"})
        err = r.json().get("error", {}) if r.status_code == 400 else {}
        res.ok = r.status_code == 400 and err.get("param") == param
        res.error = None if res.ok else f"bad request {fields}: HTTP {r.status_code} {r.text[:200]}"
    except Exception as e:
        res.error = f"bad request {fields}: {type(e).__name__}: {e}"
    return res


async def send(client, req: Req, body: dict, drop_after: int | None = None, path: str = "/v1/completions") -> Result:
    """drop_after: go away after that many chunks (a client that drops mid-stream). Times: TTFT at
    the first chunk that carries output (text, reasoning or token ids), ITL between such chunks."""
    res = Result(req.index)
    chunks = 0
    t0 = time.perf_counter()
    t_first = t_last = None
    usage = None
    try:
        async with client.stream("POST", path, json=body) as r:
            if r.status_code != 200:
                res.error = f"HTTP {r.status_code}: {(await r.aread())[:200]!r}"
                return res
            async for line in r.aiter_lines():
                if not line.startswith("data: "):
                    continue
                data = line[6:]
                if data == "[DONE]":
                    res.done = True
                    break
                obj = json.loads(data)
                if "error" in obj:
                    res.error = obj["error"].get("message")
                    break
                if obj.get("usage"):
                    usage = obj["usage"]
                chunks += 1
                if drop_after is not None and chunks >= drop_after:
                    res.error = "dropped"
                    return res                 # leaving the block closes the connection mid-stream
                for c in obj.get("choices", []):
                    d = c.get("delta") or {}
                    text = (c.get("text") or "") + (d.get("content") or "") + \
                        (d.get("reasoning_content") or d.get("reasoning") or "")
                    if c.get("token_ids") or text:
                        now = time.perf_counter()
                        if t_last is not None:
                            res.itl.append(now - t_last)
                        t_first = t_first or now
                        t_last = now
                    res.ids += c.get("token_ids") or []
                    res.text += text
                    res.finish = c.get("finish_reason") or res.finish
    except Exception as e:   # a lost response is a result too
        res.error = f"{type(e).__name__}: {e}"
        return res
    t_end = time.perf_counter()
    res.output_tokens = usage["completion_tokens"] if usage else len(res.ids)
    res.input_tokens = usage.get("prompt_tokens") if usage else None
    res.ok = res.done and res.error is None
    res.latency = t_end - t0
    if t_first is not None:
        res.ttft = t_first - t0
        if res.output_tokens > 1:       # vLLM's TPOT: (E2E latency - TTFT) / (output tokens - 1)
            res.tpot = (res.latency - res.ttft) / (res.output_tokens - 1)
    return res


def check(res: Result, req: Req, tok, seen: dict, chat: bool = False) -> str | None:
    """Why this response is lost or corrupted (None: it is fine)."""
    if not res.ok:
        return res.error or "no [DONE]"
    if not req.exact:                 # lengths are the model's own
        return None
    if res.finish != "length" or len(res.ids) != req.max_tokens or res.output_tokens != req.max_tokens:
        return f"finish {res.finish}, {len(res.ids)} ids, usage {res.output_tokens}, expected {req.max_tokens}"
    if tok is not None and not chat and tok.decode(res.ids) != res.text:
        return "streamed text differs from the decode of the streamed token ids"
    first = seen.setdefault(req.index, res.ids)
    if first != res.ids:
        return "different tokens for the same greedy request"
    return None


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"mean": None, "median": None, "p99": None}
    s = sorted(xs)      # p99 interpolated, as the vLLM-named fields (percentile)
    return {"mean": 1e3 * statistics.fmean(s), "median": 1e3 * statistics.median(s), "p99": 1e3 * percentile(s, 99)}


def _fault_plan(reqs: list[Req], faults, seed: int) -> dict:
    """request index -> ("drop", after k chunks) | ("bad", which bad body); seeded."""
    if not faults:
        return {}
    rng, plan = random.Random(seed + 24), {}
    for req in reqs:
        u = rng.random()
        if u < faults[0]:
            plan[req.index] = ("drop", rng.randint(1, max(1, req.max_tokens // 2)))
        elif u < faults[0] + faults[1]:
            plan[req.index] = ("bad", rng.randrange(len(BAD_BODIES)))
    return plan


async def run_one(url: str, model: str, reqs: list[Req], bf: bool, rate: float | None, concurrency: int | None,
                  duration: float | None, seed: int, api_key: str | None, tok, verify: bool, seen: dict,
                  faults=None, opts: Opts | None = None) -> dict:
    import httpx
    o = opts or Opts()
    plan = _fault_plan(reqs, faults, seed)
    path = "/v1/chat/completions" if o.endpoint == "chat" else "/v1/completions"
    gate = asyncio.Semaphore(o.max_concurrency) if o.max_concurrency else None

    async def request(client, req):
        if gate is None:
            return await _request(client, req)
        async with gate:
            return await _request(client, req)

    def _request(client, req):
        f = plan.get(req.index)
        body = body_of(req, model, bf, o, tok)
        if f is None:
            return send(client, req, body, path=path)
        if f[0] == "drop":
            return send(client, req, body, drop_after=f[1], path=path)
        return send_bad(client, req, body, f[1])

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    results: list[tuple[Result, Req]] = []
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(None), limits=limits, headers=headers) as client:
        t0 = time.perf_counter()
        if concurrency is None:
            rng = random.Random(seed)
            tasks, t = [], 0.0
            for req in reqs:
                if math.isfinite(rate):       # gamma gaps of mean 1/rate (shape 1: exponential = Poisson)
                    t += rng.gammavariate(o.burstiness, 1.0 / (rate * o.burstiness))
                    delay = t0 + t - time.perf_counter()
                    if delay > 0:
                        await asyncio.sleep(delay)
                tasks.append(asyncio.ensure_future(request(client, req)))
            for req, r in zip(reqs, await asyncio.gather(*tasks)):
                results.append((r, req))
        else:
            nxt = iter(range(10 ** 9))
            t_stop = None if duration is None else t0 + duration

            async def worker():
                while True:
                    k = next(nxt)
                    if (t_stop is None and k >= len(reqs)) or (t_stop is not None and time.perf_counter() >= t_stop):
                        return
                    req = reqs[k % len(reqs)]
                    results.append((await request(client, req), req))

            await asyncio.gather(*(worker() for _ in range(concurrency)))
        dur = time.perf_counter() - t0
    bad, kinds = {}, {"dropped": 0, "bad_requests": 0, "bad_answered_400": 0}
    normal = []
    for r, req in results:
        f = plan.get(req.index)
        if f is not None and f[0] == "drop":
            kinds["dropped"] += 1
            continue
        if f is not None:
            kinds["bad_requests"] += 1
            kinds["bad_answered_400"] += r.ok
            if not r.ok:
                bad[f"bad-{r.index}"] = r.error
            continue
        normal.append((r, req))
        why = check(r, req, tok, seen, o.endpoint == "chat") if verify else (None if r.ok else (r.error or "no [DONE]"))
        if why:
            bad[r.index] = why
    results = normal
    good = [r for r, _ in results if r.ok]
    out_tok = sum(r.output_tokens for r in good)
    in_tok = sum(r.input_tokens if r.input_tokens is not None else max(req.input_len, 0)
                 for r, req in results if r.ok)
    P = list(o.percentiles)
    vllm = {"request_rate": "inf" if rate is not None and not math.isfinite(rate) else rate,
            "burstiness": o.burstiness, "max_concurrency": o.max_concurrency, "duration": dur,
            "completed": len(good), "total_input_tokens": in_tok, "total_output_tokens": out_tok,
            "request_throughput": len(good) / dur, "output_throughput": out_tok / dur,
            "total_token_throughput": (in_tok + out_tok) / dur,
            "request_goodput": good_requests(good, o.goodput) / dur if o.goodput else None}
    for name, xs in (("ttft", [r.ttft for r in good if r.ttft is not None]),
                     ("tpot", [r.tpot for r in good if r.tpot is not None]),
                     ("itl", [x for r in good for x in r.itl]), ("e2el", [r.latency for r in good])):
        for k, v in summarize(xs, P).items():
            vllm[f"{k}_{name}_ms"] = v
    return {"mode": ("reasoning" if reqs and reqs[0].reasoning else "on" if bf else "off"),
            "rate": "inf" if rate is not None and not math.isfinite(rate) else rate, **vllm,
            "concurrency": concurrency, "requests": len(results), "completed": len(good),
            "failed": len(results) - len(good), "corrupted_or_lost": len(bad), "problems": dict(list(bad.items())[:5]),
            "duration_s": dur, "req_per_s": len(good) / dur, "output_tok_per_s": out_tok / dur,
            "input_tokens": sum(req.input_len for _, req in results), "output_tokens": out_tok,
            "ttft_ms": _stats([r.ttft for r in good if r.ttft is not None]),
            "tpot_ms": _stats([r.tpot for r in good if r.tpot is not None]),
            "latency_ms": _stats([r.latency for r in good]), **({"faults": kinds} if plan else {})}


# ----------------------------------------------------------------------------- the server it starts
def tokenizer_dir() -> str:
    from s1.common.paths import shared_data_dir
    d = shared_data_dir() / "qwen2.5-tokenizer"
    if not (d / "tokenizer.json").exists():
        raise SystemExit(f"bench.serve: the Qwen2.5 tokenizer is needed at {d} (set S1_SHARED_DATA), or pass --url")
    return str(d)


def random_checkpoint(shape: str, path: str, tok: str, device: str) -> str:
    from s1.model.loading import save_random_checkpoint
    if shape == "tiny":
        kw = dict(hidden_size=32, intermediate_size=64, max_position_embeddings=4096, torch_dtype="float32")
        return save_random_checkpoint(path, "smoke", tokenizer_dir=tok, seed=0, **kw)
    return save_random_checkpoint(path, shape, tokenizer_dir=tok, seed=0,
                                  torch_dtype="bfloat16" if device.startswith("cuda") else "float32")


class ServerProcess:
    def __init__(self, cmd: list[str]):
        self.p = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.lines: list[str] = []
        self.url = None
        t_end = time.monotonic() + 600
        while self.url is None and time.monotonic() < t_end:
            line = self.p.stderr.readline()
            if not line:
                break
            self.lines.append(line)
            if "listening on " in line:
                self.url = line.split("listening on ")[1].split()[0]
        if self.url is None:
            self.p.kill()
            raise SystemExit("bench.serve: the server did not start:\n" + "".join(self.lines[-30:]))
        threading.Thread(target=lambda: self.lines.extend(self.p.stderr), daemon=True).start()

    def stop(self, timeout: float = 120) -> int:
        self.p.send_signal(signal.SIGTERM)
        try:
            return self.p.wait(timeout)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return -9


def _settled_health(url: str, headers: dict, timeout: float = 30) -> dict:
    """/health once no request is open any more (dropped streams are aborted at once)."""
    import httpx
    t_end = time.monotonic() + timeout
    while True:
        h = httpx.get(url + "/health", headers=headers, timeout=30).json()
        if (h.get("open_requests") == 0 and h.get("kv_pages_free") == h.get("kv_pages")) or time.monotonic() > t_end:
            return h
        time.sleep(0.1)


def _device(name: str) -> str:
    if name != "auto":
        return name
    import torch
    return "cuda" if torch.cuda.is_available() else "cpu"


# ----------------------------------------------------------------------------- report
def _f(x, nd=1):
    return "-" if x is None else f"{x:.{nd}f}"


def table(rows: list[dict]) -> str:
    head = ("| budget forcing | rate (req/s) | clients | done/sent | req/s | output tok/s | TTFT mean / median / p99 ms "
            "| TPOT mean / median / p99 ms | latency median / p99 ms | lost or corrupted |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        t, p, e = r["ttft_ms"], r["tpot_ms"], r["latency_ms"]
        lines.append(f"| {r['mode']} | {r['rate'] if r['rate'] is not None else '-'} | {r['concurrency'] or '-'} | "
                     f"{r['completed']}/{r['requests']} | {r['req_per_s']:.2f} | {r['output_tok_per_s']:.1f} | "
                     f"{_f(t['mean'])} / {_f(t['median'])} / {_f(t['p99'])} | "
                     f"{_f(p['mean'], 2)} / {_f(p['median'], 2)} / {_f(p['p99'], 2)} | "
                     f"{_f(e['median'])} / {_f(e['p99'])} | {r['corrupted_or_lost']} |")
    return "\n".join(lines)


METRICS = (("ttft", "TTFT"), ("tpot", "TPOT"), ("itl", "ITL"), ("e2el", "E2E latency"))


def vllm_table(rows: list[dict], percentiles, goodput: bool) -> str:
    """`vllm bench serve`'s numbers per row: throughputs, then mean / median / percentiles (ms)."""
    ps = [f"p{_pname(p)}" for p in percentiles]
    head = ("| mode | rate | max conc. | req/s | " + ("goodput req/s | " if goodput else "") +
            "output tok/s | total tok/s | " +
            " | ".join(f"{lab} mean / median / {' / '.join(ps)} ms" for _, lab in METRICS) + " |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [r["mode"], str(r["request_rate"] if r["request_rate"] is not None else "-"),
                 str(r["max_concurrency"] or "-"), f"{r['request_throughput']:.2f}"]
        if goodput:
            cells.append(_f(r["request_goodput"], 2))
        cells += [f"{r['output_throughput']:.1f}", f"{r['total_token_throughput']:.1f}"]
        for key, _ in METRICS:
            cells.append(" / ".join(_f(r[f"{s}_{key}_ms"], 2) for s in ["mean", "median"] + ps))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_latency(rows: list[dict], percentiles, path: str, title: str) -> str:
    """TTFT / TPOT / ITL / E2E (median and each percentile) against the request rate, one panel
    each, one line style per budget-forcing mode; inf is drawn at the right end."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rates = sorted({r["request_rate"] for r in rows if r["request_rate"] not in (None, "inf")})
    xmax = (max(rates) * 2) if rates else 1.0

    def x_of(r):
        return xmax if r["request_rate"] == "inf" else r["request_rate"]

    fig, axes = plt.subplots(1, 4, figsize=(16, 3.8))
    stats = ["median"] + [f"p{_pname(p)}" for p in percentiles]
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    ticks = sorted({x_of(r) for r in rows if r["request_rate"] is not None})
    for ax, (key, lab) in zip(axes, METRICS):
        for mode, ls in (("off", "-"), ("on", "--"), ("reasoning", ":")):
            rs = sorted((r for r in rows if r["mode"] == mode and r["request_rate"] is not None), key=x_of)
            if not rs:
                continue
            for j, st in enumerate(stats):      # colour: the statistic; line style: the mode
                ys = [r[f"{st}_{key}_ms"] for r in rs]
                if all(y is None for y in ys):
                    continue
                ax.plot([x_of(r) for r in rs], [float("nan") if y is None else y for y in ys], ls, marker="o",
                        color=colors[j % len(colors)], label=f"{st} (bf {mode})" if mode != "reasoning" else st)
        ax.set_title(lab)
        ax.set_xlabel("request rate (req/s)")
        ax.set_ylabel("ms")
        ax.set_xscale("log")
        ax.set_xticks(ticks)
        ax.set_xticklabels(["inf" if t == xmax else f"{t:g}" for t in ticks])
        ax.minorticks_off()
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    bf = a.budget_forcing or ("on" if a.load_test else "off" if a.plain else "off,on")
    modes = [m.strip() for m in bf.split(",") if m.strip()]
    if not modes or any(m not in ("off", "on") for m in modes):
        print(f"bench.serve: --budget-forcing {bf}: use off, on or off,on", file=sys.stderr)
        return 2
    if a.load_test:
        a.concurrency = a.concurrency or 16
        a.duration = a.duration or 20.0
        a.verify = True
    if a.smoke:
        a.verify = True
        a.shape = a.shape or "tiny"
        a.device = "cpu" if a.device == "auto" else a.device
        if not a.load_test and not a.faults:
            a.num_prompts = min(a.num_prompts, 16)
            a.rates = [8.0, math.inf] if a.rates == build_parser().get_default("rates") else a.rates
        if a.input_len == (100, 1024):
            a.input_len = (8, 64)
        if a.output_len == (100, 1024):
            a.output_len = (8, 48)
        a.max_num_seqs = min(a.max_num_seqs, 32)
        a.max_model_len = min(a.max_model_len, 1024)
    faults = None
    if a.faults:
        try:
            faults = tuple(float(x) for x in a.faults.split(","))
            assert len(faults) == 2 and all(0 <= x <= 1 for x in faults) and sum(faults) <= 1
        except (ValueError, AssertionError):
            print(f"bench.serve: --faults {a.faults}: expected DROP,BAD fractions, e.g. 0.05,0.05", file=sys.stderr)
            return 2
        a.verify = True
    if a.duration is not None and a.concurrency is None:
        print("bench.serve: --duration needs --concurrency", file=sys.stderr)
        return 2
    try:
        slos = parse_goodput(a.goodput)
    except ValueError as e:
        print(f"bench.serve: {e}", file=sys.stderr)
        return 2
    for flag, v, ok in (("--burstiness", a.burstiness, a.burstiness > 0 and math.isfinite(a.burstiness)),
                        ("--max-concurrency", a.max_concurrency, a.max_concurrency is None or a.max_concurrency >= 1),
                        ("--thinking-budget", a.thinking_budget, a.thinking_budget is None or a.thinking_budget >= 0),
                        ("--num-wait", a.num_wait, a.num_wait >= 0)):
        if not ok:
            print(f"bench.serve: {flag} {v}: must be {'>= 0' if flag in ('--thinking-budget', '--num-wait') else '> 0'}",
                  file=sys.stderr)
            return 2
    dname = dataset_name(a)
    if dname in ("jsonl", "sharegpt") and not a.dataset:
        print(f"bench.serve: --dataset-name {dname} needs --dataset FILE", file=sys.stderr)
        return 2
    if a.dataset and not os.path.exists(a.dataset):
        print(f"bench.serve: --dataset {a.dataset}: no such file", file=sys.stderr)
        return 2
    if dname == "reasoning":
        modes = ["on"]                 # budget forcing is the workload itself
        a.thinking_budget = a.thinking_budget if a.thinking_budget is not None else (24 if a.smoke else 8192)
    if a.plain:
        a.verify = False
        if "on" in modes and dname != "reasoning":
            print("bench.serve: --plain sends no budget-forcing fields: use --budget-forcing off", file=sys.stderr)
            return 2
    opts = Opts(endpoint=a.endpoint or ("chat" if dname == "reasoning" else "completions"), plain=a.plain,
                thinking_field=a.thinking_field, thinking_budget=a.thinking_budget or 0, num_wait=a.num_wait,
                burstiness=a.burstiness, max_concurrency=a.max_concurrency, percentiles=tuple(a.percentiles),
                goodput=slos)
    missing = [m for m in ("httpx",) + (() if a.url else ("fastapi", "uvicorn")) if importlib.util.find_spec(m) is None]
    if missing:   # before a checkpoint is written and a server started
        print(f"bench.serve: needs {', '.join(missing)}: pip install -e \".[serve]\"", file=sys.stderr)
        return 2

    from s1.common.env import environment
    env = environment()
    tok = None
    server = None
    tmp = None
    try:
        if a.url:
            url = a.url.rstrip("/")
            tag = "url"
        else:
            from s1.common.threads import configure_threads
            device = _device(a.device)
            tok_dir = tokenizer_dir()
            if a.model:
                ckpt, tag = a.model, os.path.basename(os.path.normpath(a.model))
            else:
                shape = a.shape or "0.5B"
                tmp = tempfile.TemporaryDirectory(prefix="bench_serve_")
                configure_threads(None, work_hint="tiny" if shape == "tiny" else "large", device=device)
                t = time.perf_counter()
                ckpt = random_checkpoint(shape, os.path.join(tmp.name, "ckpt"), tok_dir, device)
                print(f"bench.serve: random {shape} checkpoint written in {time.perf_counter() - t:.1f}s",
                      file=sys.stderr)
                tag = shape
            cmd = [sys.executable, "-m", "s1.serve", "--model", ckpt, "--tokenizer", tok_dir, "--port", "0",
                   "--device", device, "--dtype", a.dtype, "--max-num-seqs", str(a.max_num_seqs),
                   "--max-model-len", str(a.max_model_len), "--served-model-name", "bench", "--log-level", "warning",
                   "--max-queue", str(max(1024, a.num_prompts))]
            if a.api_key:
                cmd += ["--api-key", a.api_key]
            t = time.perf_counter()
            server = ServerProcess(cmd)
            url = server.url
            print(f"bench.serve: server up at {url} in {time.perf_counter() - t:.1f}s", file=sys.stderr)
            from s1.model.tokenizer import Tokenizer
            tok = Tokenizer.from_pretrained(tok_dir)
        if a.tokenizer:
            from s1.model.tokenizer import Tokenizer
            tok = Tokenizer.from_pretrained(a.tokenizer)
        import httpx
        headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
        model = httpx.get(url + "/v1/models", headers=headers, timeout=30).json()["data"][0]["id"]
        reqs = make_workload(a, tok=tok)
        rows = []
        seen: dict = {}
        settings = [(None, a.concurrency)] if a.concurrency else [(r, None) for r in a.rates]
        for mode in modes:
            bf_seen = seen.setdefault(mode, {})
            for rate, conc in settings:
                row = asyncio.run(run_one(url, model, reqs, mode == "on", rate, conc, a.duration, a.seed,
                                          a.api_key, tok, a.verify, bf_seen, faults, opts))
                if faults:
                    row["health_after"] = _settled_health(url, headers)
                    h = row["health_after"]
                    if not (h.get("status") == "ok" and h.get("kv_pages_free") == h.get("kv_pages")):
                        row["corrupted_or_lost"] += 1
                        row["problems"]["health"] = h
                rows.append(row)
                print(f"bench.serve: bf {mode}, rate {row['rate']}, clients {conc}: {row['completed']}/"
                      f"{row['requests']} in {row['duration_s']:.1f}s, {row['output_tok_per_s']:.1f} tok/s, "
                      f"{row['corrupted_or_lost']} lost or corrupted", file=sys.stderr)
    finally:
        exit_code = server.stop() if server is not None else None
        if tmp is not None:
            tmp.cleanup()
    md = table(rows) + "\n\n" + vllm_table(rows, a.percentiles, bool(slos))
    for r in rows:
        if "faults" in r:
            f = r["faults"]
            md += (f"\n\nfaults ({a.faults}), bf {r['mode']}, rate {r['rate']}: {f['dropped']} clients dropped "
                   f"mid-stream, {f['bad_requests']} bad requests ({f['bad_answered_400']} answered 400 naming "
                   f"the field), {r['completed']}/{r['requests']} good requests answered exactly, "
                   f"{r['corrupted_or_lost']} lost or corrupted; /health after: {r['health_after']}")
    print(md)
    lost = sum(r["corrupted_or_lost"] for r in rows)
    rec = {"bench": "serve", "smoke": a.smoke, "load_test": a.load_test, "url": a.url, "model": a.model,
           "shape": None if a.url or a.model else (a.shape or "0.5B"), "input_len": a.input_len,
           "output_len": a.output_len, "dataset": a.dataset, "num_prompts": a.num_prompts, "seed": a.seed,
           "max_num_seqs": a.max_num_seqs, "max_model_len": a.max_model_len, "verify": a.verify,
           "server_exit_code": exit_code, "lost_or_corrupted": lost, "faults": a.faults,
           # vLLM's `bench serve` names for the run's settings (each row holds its metrics, see README)
           "schema": "s1-bench-serve/2", "backend": "openai-chat" if opts.endpoint == "chat" else "openai",
           "model_id": model, "tokenizer_id": a.tokenizer, "dataset_name": dname, "endpoint": opts.endpoint,
           "burstiness": a.burstiness, "max_concurrency": a.max_concurrency, "percentiles": a.percentiles,
           "goodput": slos or None, "thinking_budget": a.thinking_budget if dname == "reasoning" else None,
           "rows": rows, **env}
    print(json.dumps({k: rec[k] for k in ("bench", "lost_or_corrupted", "server_exit_code")}))
    if a.out != "none":
        kind = ("load" if a.load_test else "smoke" if a.smoke else tag) + ("_faults" if faults else "")
        suffix = "_cpu" if "CPU" in (env.get("device") or "") else ""
        base = a.out or os.path.join(ROOT, "bench", "results", f"serve_{kind}{suffix}")
        os.makedirs(os.path.dirname(os.path.abspath(base)), exist_ok=True)
        with open(base + ".json", "w") as f:
            json.dump(rec, f, indent=2)
        with open(base + ".md", "w") as f:
            f.write(f"# bench.serve ({kind})\n\n{env['device']}, commit {env['commit']}"
                    f"{' (dirty)' if env['dirty'] else ''}, torch {env['torch']}, {env['date']}\n\n{md}\n")
        print(f"bench.serve: wrote {base}.json and {base}.md", file=sys.stderr)
        if a.plot:
            png = plot_latency(rows, a.percentiles, base + "_latency.png",
                               f"bench.serve ({kind}): {env['device']}, commit {env['commit']}")
            print(f"bench.serve: wrote {png}", file=sys.stderr)
    bad_exit = exit_code not in (None, 0)
    return 1 if (lost or bad_exit) and (a.verify or a.load_test) else 0


if __name__ == "__main__":
    sys.exit(main())
