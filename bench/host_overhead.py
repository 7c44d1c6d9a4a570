"""Host overhead of the engine: the part of a decode step a GPU cannot hide, measured on a CPU.

The real scheduler, block manager, budget-forcing state (its torch ops run on the CPU here),
runner bookkeeping and output processing drive a stub model that returns preallocated logits over
a small vocabulary (no compute). Everything goes through the public `LLM.generate` API, so the
same script measures an older engine too (`--repo DIR`: a checkout of another commit).

    python -m bench.host_overhead              # the full table (a few minutes on 2 cores)
    python -m bench.host_overhead --smoke      # seconds: the script works
    python -m bench.host_overhead --repo /tmp/old --out bench/results/host_overhead_before.json
    python -m bench.host_overhead --phases     # the host time per phase over repeated calls

Per decode step = (time of a call with T2 output tokens - time with T1) / (T2 - T1): prefill and
call set-up cancel. Times are this process's CPU time (torch uses one thread here; on a quiet
machine CPU time = wall time, and on a busy one it does not count the time other processes hold
the cores). "host" excludes the time of the ops a GPU runs: the device part of a decode step
(`ModelRunner._decode_step`: decode-column, input-token and block-table gathers, the stub
forward, the sampling + budget-forcing op -- on a CPU torch code run on the host, on a GPU the
ops a CUDA graph replays);
"total" includes it. "host, all but the sampler" excludes only the sampling + rules op (the
definition of the first measurements, and the only one an engine without `_decode_step` allows:
the "before" runs). Reported (microseconds per decode step):
  1. vs batch size (1 ... 512), every request with budget forcing rules (thinking cap, "Wait");
  2. vs prefix-cache occupancy: the same batch of 256 after the cache was filled with N pages of
     finished prompts (revivable, hashed), whose prefixes the new prompts share;
  3. vs call number: 100 identical calls of 256 requests whose prompts repeat (an s1 budget sweep
     re-prefills the same questions): per-step cost and whole-call time at call 1, 10, 100 (each
     the median over the 5 calls ending there; call 1 alone), and the medians of every tenth of
     the calls (1-10, 11-20, ...) with the host's share of the step.
Target (the engine issue): at batch 256 <= 1 ms per step, flat (+-10%) from call 1 to call 100.
"""
from __future__ import annotations

import argparse
import gc
import importlib
import json
import os
import statistics
import sys
import time

from bench.standin import StandInTokenizer

V = 1024                    # stub vocabulary (ids >= 259 are never produced)


def _f(x: float | None) -> str:
    """A per-step time for the log: a difference of two calls can fall below the timer's noise
    (a negative value): said so, never printed as a negative time."""
    return "   noise" if x is None or x < 0 else f"{x:8.1f}"


def drop_negative(res, every: bool = False):
    """Every *_us / *_ms value (every number under "phases": microseconds per phase) below 0 ->
    None (below the timer noise; the smoke sizes are too small to measure), in place; returns how
    many."""
    n = 0
    items = res.items() if isinstance(res, dict) else enumerate(res) if isinstance(res, list) else ()
    for k, v in items:
        if isinstance(v, (dict, list)):
            n += drop_negative(v, every or k == "phases")
        elif (isinstance(k, str) and (every or k.endswith(("_us", "_ms", "_share", "_seq")))
              and isinstance(v, (int, float)) and not isinstance(v, bool) and v < 0):
            res[k] = None
            n += 1
    return n


def make_stub(torch, nn, max_len: int, max_rows: int):
    from s1.model.config import Qwen2Config

    class StubModel(nn.Module):
        """Logits from a preallocated table (row i: the model "wants" token 97 + i % 20), so the
        engine's own host work is all that is measured."""

        def __init__(self):
            super().__init__()
            self.config = Qwen2Config(vocab_size=V, hidden_size=8, intermediate_size=8, num_hidden_layers=1,
                                      num_attention_heads=1, num_key_value_heads=1,
                                      max_position_embeddings=max_len, torch_dtype="float32")
            self.dummy = nn.Parameter(torch.zeros(1))
            table = torch.zeros(max_rows, V)
            table[torch.arange(max_rows), 97 + torch.arange(max_rows) % 20] = 5.0
            self.register_buffer("table", table)

        def forward(self, input_ids, positions=None, kv_cache=None, logits_indices=None, **kw):
            n = input_ids.shape[0] if logits_indices is None else logits_indices.shape[0]
            return self.table[:n]

    return StubModel()


class DeviceClock:
    """Accumulates the time spent in the given methods -- the ops a GPU would run -- counting only
    the outermost call when they nest. Wrapped on the classes, so old and new engines are measured
    alike."""

    def __init__(self, targets):
        self.seconds = 0.0
        self.depth = 0
        for cls, name in targets:
            self._wrap(cls, name)

    def _wrap(self, cls, name):
        orig = getattr(cls, name)
        clock = self

        def timed(self_, *a, **k):
            clock.depth += 1
            t = time.process_time()
            try:
                return orig(self_, *a, **k)
            finally:
                clock.depth -= 1
                if clock.depth == 0:
                    clock.seconds += time.process_time() - t
        setattr(cls, name, timed)


class PhaseTimer:
    """Time spent in each of the engine's host phases (`--phases`): wraps the named methods where
    the engine has them (classmethods too)."""

    PHASES = [("scheduler", "Scheduler", "schedule"), ("block_manager", "BlockManager", "append_page"),
              ("scheduler", "Scheduler", "launched"), ("runner", "ModelRunner", "decode_inputs"),
              ("runner", "ModelRunner", "_flush_pages"), ("budget", "StepResult", "from_host"),
              ("scheduler", "Scheduler", "postprocess"), ("engine", "LLMEngine", "_report")]

    def __init__(self, pkg: str = "s1.infer"):
        self.seconds: dict[str, float] = {}
        self.names = []
        for mod, cls_name, name in self.PHASES:
            cls = getattr(importlib.import_module(f"{pkg}.{mod}"), cls_name, None)
            if cls is not None and name in cls.__dict__:
                self._wrap(cls, name)
                self.names.append(name)

    def _wrap(self, cls, name):
        raw = cls.__dict__[name]
        is_cm = isinstance(raw, classmethod)
        orig = raw.__func__ if is_cm else raw
        acc = self.seconds

        def timed(*a, **k):
            t = time.perf_counter()      # the cheapest clock: these wrap calls made per page
            try:
                return orig(*a, **k)
            finally:
                acc[name] = acc.get(name, 0.0) + time.perf_counter() - t
        setattr(cls, name, classmethod(timed) if is_cm else timed)


def run(args) -> dict:
    # --repo: another checkout's engine (a git worktree of an earlier commit). Checkouts before the
    # one-package layout (commit 5838221 and older) have the engine at the top level, later ones in s1/.
    pkg = "s1.infer"
    if args.repo:
        repo = os.path.abspath(args.repo)
        sys.path.insert(0, repo)
        pkg = "s1.infer" if os.path.isdir(os.path.join(repo, "s1", "infer")) else "infer"
        for m in [m for m in sys.modules if m.split(".")[0] in ("s1", pkg.split(".")[0])]:
            del sys.modules[m]
    import torch
    from torch import nn
    infer = importlib.import_module(pkg)
    LLM, SamplingParams = infer.LLM, infer.SamplingParams
    budget_cls = importlib.import_module(f"{pkg}.budget").BudgetState
    runner_cls = getattr(importlib.import_module(f"{pkg}.runner"), "ModelRunner", None)
    # "device": the whole device part of a decode step (input gathers, forward, sampling + rules:
    # what a CUDA graph replays) where the engine has it as one method, else the sampling op;
    # "sampler": the sampling + rules op alone (the definition the first measurements used)
    device_step = [(runner_cls, "_decode_step")] if hasattr(runner_cls, "_decode_step") else []
    clock = DeviceClock(device_step + [(budget_cls, "step")])
    sampler = DeviceClock([(budget_cls, "step")])
    torch.set_num_threads(1)

    smoke = args.smoke
    batches = [1, 8, 32] if smoke else [1, 8, 32, 64, 128, 256, 512]
    t1, t2 = (4, 28) if smoke else (16, 112)     # 96 steps apart: the difference dwarfs timer noise
    plen, page = 64, 16
    max_rows = max(batches) * 2
    tok = StandInTokenizer.byte_level()   # the three special tokens the engine needs (old and new engines)
    model = make_stub(torch, nn, 4096, max_rows)
    num_pages = 4096 if smoke else 65536          # an H200-sized page pool (0.5B: ~61K pages)

    def engine(**kw):
        base = dict(model=model, tokenizer=tok, page_size=page, num_pages=num_pages, max_model_len=4096,
                    max_num_seqs=max(batches))
        base.update(kw)
        return LLM(**base)

    def params(t):
        # budget forcing on: a thinking cap and one "Wait" (the stub never ends, so the cap fires)
        return SamplingParams(max_thinking_tokens=t // 2, num_wait=1, max_tokens=t, ignore_eos=True)

    def prompts(n, seed, shared=0):
        g = torch.Generator().manual_seed(seed)
        head = torch.randint(0, 256, (shared,), generator=torch.Generator().manual_seed(99)).tolist()
        return [head + torch.randint(0, 256, (plen - shared,), generator=g).tolist() for _ in range(n)]

    def call(llm, ps, t):
        """(CPU, host, host counting all but the sampler) seconds of one generate call."""
        d0, s0 = clock.seconds, sampler.seconds
        t0 = time.process_time()
        outs = llm.generate(ps, params(t), use_tqdm=False)
        dt = time.process_time() - t0
        assert all(len(o.output_token_ids) == t for o in outs), "stub run did not produce its tokens"
        return dt, dt - (clock.seconds - d0), dt - (sampler.seconds - s0)

    def pair(llm, ps):
        """(host, total, host counting all but the sampler) us per decode step from one T1 / T2
        pair of calls, and the T2 call's (CPU ms, host ms). A collection first, so a garbage
        collection left over from the set-up does not land in the pair."""
        gc.collect()
        a = call(llm, ps, t1)
        b = call(llm, ps, t2)
        per = lambda k: (b[k] - a[k]) / (t2 - t1) * 1e6  # noqa: E731
        return per(1), per(0), per(2), 1e3 * b[0], 1e3 * b[1]

    def per_step(llm, ps, reps):
        """(host, total, host counting all but the sampler) microseconds per decode step, medians
        over reps."""
        runs = [pair(llm, ps) for _ in range(reps)]
        return tuple(statistics.median(r[k] for r in runs) for k in range(3))

    if args.phases:   # per-phase host time per decode step over repeated calls, nothing else
        timer = PhaseTimer(pkg)
        b, n_calls = (32, 12) if smoke else (256, 60)
        windows = [(0, 4), (4, 8), (8, 12)] if smoke else [(0, 10), (20, 30), (50, 60)]
        llm, ps = engine(), prompts(b, 11)
        rows = []
        for _ in range(n_calls):
            gc.collect()
            timer.seconds.clear()
            a = call(llm, ps, t1)
            sa = dict(timer.seconds)
            timer.seconds.clear()
            c = call(llm, ps, t2)
            row = {k: (timer.seconds.get(k, 0.0) - sa.get(k, 0.0)) / (t2 - t1) * 1e6 for k in timer.names}
            row["host"], row["total"] = ((c[i] - a[i]) / (t2 - t1) * 1e6 for i in (1, 0))
            rows.append(row)
        keys = ["host"] + timer.names + ["total"]
        return {"phases": [{"calls": f"{lo + 1}-{hi}", "batch": b,
                            **{k: round(statistics.median(r[k] for r in rows[lo:hi]), 1) for k in keys}}
                           for lo, hi in windows]}

    res = {"batch": [], "occupancy": [], "calls": []}
    llm = engine()
    call(llm, prompts(4, 0), t1)                                  # warm-up
    for b in batches:
        host, total, host_s = per_step(llm, prompts(b, b), 3 if smoke else 5)
        res["batch"].append({"batch": b, "host_us": round(host, 1), "total_us": round(total, 1),
                             "host_us_per_seq": round(host / b, 2), "host_sampler_def_us": round(host_s, 1)})
        print(f"batch {b:4d}: host {_f(host)} us ({_f(host_s)} us counting all but the sampler), "
              f"total {_f(total)} us per decode step", file=sys.stderr, flush=True)

    b = 32 if smoke else 256
    occ = [0, 1024] if smoke else [0, 8192, 32768, 60000]
    for n_cached in occ:
        llm = engine()
        filled = 0
        while filled < n_cached:          # finished prompts leave hashed pages on the free list
            k = min(256, (n_cached - filled) // (plen // page) or 1)
            llm.generate(prompts(k, 1000 + filled), SamplingParams(max_tokens=1, ignore_eos=True), use_tqdm=False)
            filled += k * (plen // page)
        host, total, host_s = per_step(llm, prompts(b, 7, shared=plen // 2), 3 if smoke else 5)
        res["occupancy"].append({"cached_pages": n_cached, "batch": b, "host_us": round(host, 1),
                                 "total_us": round(total, 1), "host_sampler_def_us": round(host_s, 1)})
        print(f"cached pages {n_cached:6d}: host {_f(host)} us, total {_f(total)} us per decode step "
              f"(batch {b})", file=sys.stderr, flush=True)

    llm = engine()
    ps = prompts(b, 11)
    n_calls = 12 if smoke else 100
    marks = [1, 6, n_calls] if smoke else [1, 10, n_calls]
    window = 3 if smoke else 5            # each mark: the median over `window` call pairs ending there
    runs = []
    for i in range(1, n_calls + 1):
        runs.append(pair(llm, ps))
        if i in marks:
            w = runs[max(0, i - window):i] if i > 1 else runs[:1]
            med = [statistics.median(r[k] for r in w) for k in range(5)]
            res["calls"].append({"call": i, "batch": b, "calls_in_median": len(w), "host_us": round(med[0], 1),
                                 "total_us": round(med[1], 1), "host_sampler_def_us": round(med[2], 1),
                                 "call_wall_ms": round(med[3], 1), "call_host_ms": round(med[4], 1)})
            r = res["calls"][-1]
            print(f"call {i:3d}: host {_f(r['host_us'])} us, total {_f(r['total_us'])} us per decode step; "
                  f"{r['call_wall_ms']:7.1f} ms per call (median of {len(w)})", file=sys.stderr, flush=True)
    # every call in blocks of a tenth: a trend with the call number shows here, above the noise of
    # single calls (host / total: the host's share, which a machine that slows down leaves alone)
    step = max(1, n_calls // 10)
    res["call_blocks"] = []
    for k in range(0, n_calls, step):
        w = runs[k:k + step]
        host, total = statistics.median(r[0] for r in w), statistics.median(r[1] for r in w)
        res["call_blocks"].append({"calls": f"{k + 1}-{k + len(w)}", "batch": b, "host_us": round(host, 1),
                                   "total_us": round(total, 1), "host_share": round(host / total, 3)})
    return res


def markdown(res: dict, env: dict) -> str:
    lines = [f"# Engine host overhead (stub model, CPU) — {env.get('device')}, commit {env.get('commit')}"
             f"{' (dirty)' if env.get('dirty') else ''}, torch {env.get('torch')}, {env.get('date')}", "",
             "host = per decode step without the device ops (input gathers, stub forward, sampling + "
             "budget rules: what a CUDA graph replays); all but the sampler = without the sampling + rules op "
             "only; total = with them all (on a CPU they run as torch code on the host).", "",
             "| batch | host us / step | host us / sequence | host, all but the sampler | total us / step |",
             "|---|---|---|---|---|"]
    s = lambda r: r.get("host_sampler_def_us", r["host_us"])  # noqa: E731  (older result files lack it)
    lines += [f"| {r['batch']} | {r['host_us']} | {r['host_us_per_seq']} | {s(r)} | {r['total_us']} |"
              for r in res["batch"]]
    lines += ["", "| cached pages | batch | host us / step | host, all but the sampler | total us / step |",
              "|---|---|---|---|---|"]
    lines += [f"| {r['cached_pages']} | {r['batch']} | {r['host_us']} | {s(r)} | {r['total_us']} |"
              for r in res["occupancy"]]
    lines += ["", "| call | batch | host us / step | host, all but the sampler | total us / step | "
              "CPU ms per call (host ms) |", "|---|---|---|---|---|---|"]
    lines += [f"| {r['call']} | {r['batch']} | {r['host_us']} | {s(r)} | {r['total_us']} | {r['call_wall_ms']} "
              f"({r['call_host_ms']}) |" for r in res["calls"]]
    if res.get("call_blocks"):
        lines += ["", "| calls (medians) | batch | host us / step | total us / step | host / total |", "|---|---|---|---|---|"]
        lines += [f"| {r['calls']} | {r['batch']} | {r['host_us']} | {r['total_us']} | {r['host_share']} |"
                  for r in res["call_blocks"]]
    return "\n".join(lines) + "\n"


def phases_markdown(res: dict, env: dict) -> str:
    rows = res["phases"]
    keys = [k for k in rows[0] if k not in ("calls", "batch")]
    lines = [f"# Engine host overhead per phase (stub model, CPU) — {env.get('device')}, commit {env.get('commit')}"
             f"{' (dirty)' if env.get('dirty') else ''}, torch {env.get('torch')}, {env.get('date')}", "",
             f"µs per decode step at batch {rows[0]['batch']}, medians over the calls of each window "
             "(host, total: CPU time as in the main table, host = the step without its device part; "
             "phases: wall time inside each method); append_page runs inside schedule; _report builds "
             "finished requests' outputs.", "",
             "| calls | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    lines += [f"| {r['calls']} | " + " | ".join(str(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.host_overhead", description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="small sizes: checks the script works (seconds)")
    ap.add_argument("--repo", help="measure the engine of another checkout (path to its root)")
    ap.add_argument("--phases", action="store_true",
                    help="instead: host time per phase (schedule, decode inputs, result, ...) per decode step "
                         "at batch 256 over 60 repeated calls (calls 1-10, 21-30, 51-60)")
    ap.add_argument("--out", help="JSON results file (default: bench/results/host_overhead[_phases][_smoke].json)")
    args = ap.parse_args(argv)
    res = run(args)
    noisy = drop_negative(res)
    if noisy:
        res["below_noise"] = noisy
    from s1.common.env import environment
    env = environment(args.repo) if args.repo else environment()
    res["env"] = env
    md = phases_markdown(res, env) if args.phases else markdown(res, env)
    if noisy:
        md += (f"\n{noisy} value(s) fell below the timer's noise (a difference of two calls came out negative) and "
               "are shown as None: the sizes are too small to measure (--smoke) or the machine was busy.\n")
    print(md)
    name = "host_overhead" + ("_phases" if args.phases else "") + ("_smoke" if args.smoke else "")
    out = args.out or os.path.join(os.path.dirname(os.path.abspath(__file__)), "results", name + ".json")
    if not args.smoke or args.out:
        os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
        with open(out, "w") as f:
            json.dump(res, f, indent=1)
        with open(out.removesuffix(".json") + ".md", "w") as f:
            f.write(md)
    print(json.dumps({"bench": "host_overhead", **({"phases": res["phases"]} if args.phases else
                                                    {"batch": res["batch"], "calls": res["calls"]})}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
