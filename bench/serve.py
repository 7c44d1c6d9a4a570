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
tok/s), time to first token (TTFT), time per output token after the first (TPOT) and end-to-end
latency, each as mean, median and p99 (ms). With --verify (on in --smoke and --load-test) every
response is checked: it ends with [DONE], has exactly max_tokens token ids, its text is the decode
of those ids, and a prompt sent again returns the same ids (greedy): a lost, cut or mixed-up
response counts as corrupted.

    python -m bench.serve --smoke                        # CPU: a tiny random checkpoint it makes, seconds
    python -m bench.serve --shape 0.5B --rates 4,16,64,inf --num-prompts 256     # GPU
    python -m bench.serve --model DIR --concurrency 32 --num-prompts 512
    python -m bench.serve --url http://127.0.0.1:8000 --rates 2,8       # a server already running
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
    wl.add_argument("--rates", type=_rates, default=[1.0, 4.0, 16.0, math.inf],
                    help="request rates in req/s (Poisson arrivals); inf sends all at once")
    wl.add_argument("--concurrency", type=int, default=None,
                    help="instead of --rates: this many clients, each sending its next request when the last ends")
    wl.add_argument("--num-prompts", type=int, default=200, help="requests per rate (and mode)")
    wl.add_argument("--duration", type=float, default=None,
                    help="with --concurrency: run for this many seconds instead of --num-prompts requests")
    wl.add_argument("--input-len", type=_range, default=(100, 1024), metavar="LO:HI",
                    help="prompt lengths in tokens, uniform (nano-vllm's distribution)")
    wl.add_argument("--output-len", type=_range, default=(100, 1024), metavar="LO:HI",
                    help="output lengths in tokens, uniform (nano-vllm's distribution)")
    wl.add_argument("--dataset", default=None,
                    help='JSONL prompts ({"prompt": str or token ids, "max_tokens": optional}) instead of random ids')
    wl.add_argument("--budget-forcing", default=None,
                    help="modes to run, a comma list of off (plain generation) and on (thinking cap = output - 24, "
                         "num_wait 2); default: off,on (--load-test: on)")
    wl.add_argument("--seed", type=int, default=0, help="seed of the prompts and the arrivals")
    wl.add_argument("--verify", action="store_true", help="check every response (see above)")
    wl.add_argument("--faults", default=None, metavar="DROP,BAD",
                    help="fractions of clients that drop mid-stream / send bad requests (e.g. 0.05,0.05)")
    out = ap.add_argument_group("modes and output")
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


def make_workload(a, vocab: int = 10000) -> list[Req]:
    rng = random.Random(a.seed)
    if a.dataset:
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


def body_of(req: Req, model: str, bf: bool) -> dict:
    b = {"model": model, "prompt": req.prompt, "max_tokens": req.max_tokens, "temperature": 0, "ignore_eos": True,
         "stream": True, "stream_options": {"include_usage": True}, "return_token_ids": True}
    if bf:
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


async def send(client, req: Req, body: dict, drop_after: int | None = None) -> Result:
    """drop_after: go away after that many chunks (a client that drops mid-stream)."""
    res = Result(req.index)
    chunks = 0
    t0 = time.perf_counter()
    t_first = t_last = None
    usage = None
    try:
        async with client.stream("POST", "/v1/completions", json=body) as r:
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
                    if c.get("token_ids") or c.get("text"):
                        now = time.perf_counter()
                        t_first = t_first or now
                        t_last = now
                    res.ids += c.get("token_ids") or []
                    res.text += c.get("text") or ""
                    res.finish = c.get("finish_reason") or res.finish
    except Exception as e:   # a lost response is a result too
        res.error = f"{type(e).__name__}: {e}"
        return res
    t_end = time.perf_counter()
    res.output_tokens = usage["completion_tokens"] if usage else len(res.ids)
    res.ok = res.done and res.error is None
    res.latency = t_end - t0
    if t_first is not None:
        res.ttft = t_first - t0
        if res.output_tokens > 1:
            res.tpot = (t_last - t_first) / (res.output_tokens - 1)
    return res


def check(res: Result, req: Req, tok, seen: dict) -> str | None:
    """Why this response is lost or corrupted (None: it is fine)."""
    if not res.ok:
        return res.error or "no [DONE]"
    if res.finish != "length" or len(res.ids) != req.max_tokens or res.output_tokens != req.max_tokens:
        return f"finish {res.finish}, {len(res.ids)} ids, usage {res.output_tokens}, expected {req.max_tokens}"
    if tok is not None and tok.decode(res.ids) != res.text:
        return "streamed text differs from the decode of the streamed token ids"
    first = seen.setdefault(req.index, res.ids)
    if first != res.ids:
        return "different tokens for the same greedy request"
    return None


def _stats(xs: list[float]) -> dict:
    if not xs:
        return {"mean": None, "median": None, "p99": None}
    s = sorted(xs)
    p99 = s[min(len(s) - 1, max(0, math.ceil(0.99 * len(s)) - 1))]
    return {"mean": 1e3 * statistics.fmean(s), "median": 1e3 * statistics.median(s), "p99": 1e3 * p99}


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
                  faults=None) -> dict:
    import httpx
    plan = _fault_plan(reqs, faults, seed)

    def request(client, req):
        f = plan.get(req.index)
        if f is None:
            return send(client, req, body_of(req, model, bf))
        if f[0] == "drop":
            return send(client, req, body_of(req, model, bf), drop_after=f[1])
        return send_bad(client, req, body_of(req, model, bf), f[1])

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    limits = httpx.Limits(max_connections=None, max_keepalive_connections=None)
    results: list[tuple[Result, Req]] = []
    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(None), limits=limits, headers=headers) as client:
        t0 = time.perf_counter()
        if concurrency is None:
            rng = random.Random(seed)
            tasks, t = [], 0.0
            for req in reqs:
                if math.isfinite(rate):
                    t += rng.expovariate(rate)
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
        why = check(r, req, tok, seen) if verify else (None if r.ok else (r.error or "no [DONE]"))
        if why:
            bad[r.index] = why
    results = normal
    good = [r for r, _ in results if r.ok]
    out_tok = sum(r.output_tokens for r in good)
    return {"mode": "on" if bf else "off", "rate": "inf" if rate is not None and not math.isfinite(rate) else rate,
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


def main(argv: list[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    bf = a.budget_forcing or ("on" if a.load_test else "off,on")
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
        import httpx
        headers = {"Authorization": f"Bearer {a.api_key}"} if a.api_key else {}
        model = httpx.get(url + "/v1/models", headers=headers, timeout=30).json()["data"][0]["id"]
        reqs = make_workload(a)
        rows = []
        seen: dict = {}
        settings = [(None, a.concurrency)] if a.concurrency else [(r, None) for r in a.rates]
        for mode in modes:
            bf_seen = seen.setdefault(mode, {})
            for rate, conc in settings:
                row = asyncio.run(run_one(url, model, reqs, mode == "on", rate, conc, a.duration, a.seed,
                                          a.api_key, tok, a.verify, bf_seen, faults))
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
    md = table(rows)
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
           "server_exit_code": exit_code, "lost_or_corrupted": lost, "faults": a.faults, "rows": rows, **env}
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
    bad_exit = exit_code not in (None, 0)
    return 1 if (lost or bad_exit) and (a.verify or a.load_test) else 0


if __name__ == "__main__":
    sys.exit(main())
