"""`GET /metrics` of `s1 serve`: Prometheus text exposition format 0.0.4, pure Python.

Names follow vLLM's (`vllm:` -> `s1:`, same suffixes and units) where vLLM has the metric, so a
dashboard written for vLLM needs only the prefix changed; the budget-forcing counters are ours.
Every series carries the label model_name (the served model name). The table (README "Serving"
repeats it):

  histograms (seconds / tokens; _bucket, _sum, _count)
    s1:time_to_first_token_seconds            submit -> first output token of a request
    s1:inter_token_latency_seconds            between consecutive output tokens of a request
    s1:request_time_per_output_token_seconds  per request: (last - first token time) / (tokens - 1)
    s1:e2e_request_latency_seconds            submit -> finished
    s1:request_prompt_tokens                  prompt length of each finished request
    s1:request_generation_tokens              output length of each finished request
  gauges (read when scraped)
    s1:num_requests_running                   requests in the running batch
    s1:num_requests_waiting                   submitted, no first token yet
    s1:kv_cache_pages_used / s1:kv_cache_pages_free / s1:kv_cache_pages_total
    s1:kv_cache_usage_perc                    used / total pages (0..1)
    s1:prefix_cache_hit_rate                  hits / queries over the server's life (0 before any)
  counters (_total)
    s1:request_success_total{finished_reason} finished requests by the engine's reason: stop,
                                              length, abort, error
    s1:prompt_tokens_total / s1:generation_tokens_total
    s1:prefix_cache_queries_total / s1:prefix_cache_hits_total   prompt tokens prefilled / found in the cache
    s1:num_preemptions_total                  requests preempted (pages given back, recomputed later)
    s1:thinking_tokens_total                  thinking tokens of finished requests
    s1:thinking_forced_end_total              requests whose thinking reached max_thinking_tokens (the
                                              forced "Final Answer:" end)
    s1:wait_extensions_total                  extensions inserted ("Wait"), num_wait used

Timings are taken on the server's event loop when the engine's outputs arrive there (one request =
one choice; a request with n = 4 counts four). Why no prometheus_client: the format is a few lines
of text, the gauges are read from the engine at scrape time anyway, and the library's process-wide
default registry would need a per-app registry for every in-process server (the tests start
several); the tests parse this output with prometheus_client's own parser (test extra), so the
exposition is checked by the reference implementation.
"""
from __future__ import annotations

import bisect
import math

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

# vLLM's bucket bounds (seconds) for the latency histograms, extended upward for long thinking runs
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
                20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
ITL_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
               20.0, 40.0, 80.0)
E2E_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0, 50.0, 60.0, 120.0,
               240.0, 480.0, 960.0, 1920.0, 7680.0)
TOKEN_BUCKETS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000, 100000)


def _escape(v: str) -> str:
    return v.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(d: dict) -> str:
    return "{" + ",".join(f'{k}="{_escape(str(v))}"' for k, v in d.items()) + "}" if d else ""


def _num(v: float) -> str:
    if isinstance(v, int):
        return str(v)
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    if math.isnan(v):
        return "NaN"
    return repr(float(v))


class Histogram:
    """Cumulative buckets as Prometheus wants them (the +Inf bucket = the count)."""

    def __init__(self, name: str, help: str, buckets):
        self.name, self.help, self.bounds = name, help, tuple(sorted(buckets))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, v: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, v)] += 1
        self.sum += v
        self.count += 1

    def lines(self, labels: dict) -> list[str]:
        out = [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} histogram"]
        acc = 0
        for b, c in zip(self.bounds + (math.inf,), self.counts):
            acc += c
            out.append(f"{self.name}_bucket{_labels({**labels, 'le': _num(float(b))})} {acc}")
        out.append(f"{self.name}_sum{_labels(labels)} {_num(float(self.sum))}")
        out.append(f"{self.name}_count{_labels(labels)} {self.count}")
        return out


FINISH_REASONS = ("stop", "length", "abort", "error")


class Metrics:
    """The server's metrics; touched only on the event loop's thread (EngineLoop._deliver) and by
    `render` (also there), so no lock."""

    def __init__(self, model_name: str):
        self.model_name = model_name
        self.ttft = Histogram("s1:time_to_first_token_seconds", "Time to first token (seconds).", TTFT_BUCKETS)
        self.itl = Histogram("s1:inter_token_latency_seconds", "Time between output tokens (seconds).",
                             ITL_BUCKETS)
        self.tpot = Histogram("s1:request_time_per_output_token_seconds",
                              "Per request: (last token time - first token time) / (output tokens - 1), seconds.",
                              ITL_BUCKETS)
        self.e2e = Histogram("s1:e2e_request_latency_seconds", "End-to-end request latency (seconds).",
                             E2E_BUCKETS)
        self.prompt_len = Histogram("s1:request_prompt_tokens", "Prompt tokens per finished request.",
                                    TOKEN_BUCKETS)
        self.output_len = Histogram("s1:request_generation_tokens", "Output tokens per finished request.",
                                    TOKEN_BUCKETS)
        self.finished = {r: 0 for r in FINISH_REASONS}
        self.prompt_tokens = 0
        self.generation_tokens = 0
        self.thinking_tokens = 0
        self.forced_ends = 0
        self.waits = 0

    # ------------------------------------------------------------------ events (event loop thread)
    def on_tokens(self, stream, n: int, now: float) -> None:
        """`n` new output tokens of `stream` (an EngineLoop Stream with t_submit/t_first/t_last)."""
        if n <= 0:
            return
        if stream.t_first is None:
            stream.t_first = now
            self.ttft.observe(now - stream.t_submit)
            n -= 1
        else:
            gap = (now - stream.t_last) / n
            for _ in range(n):
                self.itl.observe(gap)
            n = 0
        stream.t_last = now

    def on_finish(self, stream, out, now: float) -> None:
        """`out`: the request's GenerationOutput."""
        reason = out.finish_reason if out.finish_reason in self.finished else "error"
        self.finished[reason] += 1
        n_out, n_prompt = len(out.output_token_ids), len(out.prompt_token_ids)
        self.prompt_tokens += n_prompt
        self.generation_tokens += n_out
        self.e2e.observe(now - stream.t_submit)
        self.prompt_len.observe(n_prompt)
        self.output_len.observe(n_out)
        if n_out > 1 and stream.t_first is not None and stream.t_last is not None:
            self.tpot.observe((stream.t_last - stream.t_first) / (n_out - 1))
        self.thinking_tokens += out.num_thinking_tokens
        self.waits += out.num_waits_used
        cap = out.max_thinking_tokens
        if cap is not None and out.num_thinking_tokens >= cap and out.finish_reason in ("stop", "length"):
            self.forced_ends += 1

    # ------------------------------------------------------------------ exposition
    def render(self, gauges: dict, counters: dict) -> str:
        """The exposition: histograms and counters kept here, plus `gauges` / `counters` read from
        the engine now ({short name: value}, names without the "s1:" prefix and "_total")."""
        lab = {"model_name": self.model_name}
        out: list[str] = []
        for h in (self.ttft, self.itl, self.tpot, self.e2e, self.prompt_len, self.output_len):
            out += h.lines(lab)
        helps = {
            "num_requests_running": "Requests in the running batch.",
            "num_requests_waiting": "Requests submitted without a first token yet.",
            "kv_cache_pages_used": "KV-cache pages in use.",
            "kv_cache_pages_free": "KV-cache pages free.",
            "kv_cache_pages_total": "KV-cache pages in all.",
            "kv_cache_usage_perc": "Fraction of KV-cache pages in use (0..1).",
            "prefix_cache_hit_rate": "Prompt tokens found in the prefix cache / prompt tokens prefilled.",
        }
        for k, v in gauges.items():
            out += [f"# HELP s1:{k} {helps.get(k, k)}", f"# TYPE s1:{k} gauge", f"s1:{k}{_labels(lab)} {_num(v)}"]
        # text format 0.0.4: a counter's HELP/TYPE name the series itself (with _total), as
        # prometheus_client writes them
        out += ["# HELP s1:request_success_total Finished requests by the engine's finish reason.",
                "# TYPE s1:request_success_total counter"]
        for r, c in self.finished.items():
            out.append(f"s1:request_success_total{_labels({**lab, 'finished_reason': r})} {c}")
        mine = {"prompt_tokens": (self.prompt_tokens, "Prompt tokens of finished requests."),
                "generation_tokens": (self.generation_tokens, "Output tokens of finished requests."),
                "thinking_tokens": (self.thinking_tokens, "Thinking tokens of finished requests."),
                "thinking_forced_end": (self.forced_ends,
                                        "Requests whose thinking reached max_thinking_tokens (forced end)."),
                "wait_extensions": (self.waits, "Extensions (\"Wait\") inserted by budget forcing.")}
        helps_c = {"prefix_cache_queries": "Prompt tokens prefilled (cached or computed).",
                   "prefix_cache_hits": "Prompt tokens whose KV came from the prefix cache.",
                   "num_preemptions": "Requests preempted (pages given back, recomputed later)."}
        for k, (v, h) in mine.items():
            out += [f"# HELP s1:{k}_total {h}", f"# TYPE s1:{k}_total counter", f"s1:{k}_total{_labels(lab)} {_num(v)}"]
        for k, v in counters.items():
            out += [f"# HELP s1:{k}_total {helps_c.get(k, k)}", f"# TYPE s1:{k}_total counter",
                    f"s1:{k}_total{_labels(lab)} {_num(v)}"]
        return "\n".join(out) + "\n"


def engine_gauges(engine, loop) -> tuple[dict, dict]:
    """(gauges, counters) read from the engine now (from the event loop's thread: plain integer
    reads of state the engine thread writes; a scrape may see a step half applied, never a torn value)."""
    alive = engine.block_manager is not None
    total = engine.num_pages
    free = engine.block_manager.num_free if alive else 0
    used = total - free if alive else 0
    c = engine.counters
    queries = c["prefill_tokens"] + c["prefill_cached_tokens"]
    gauges = {"num_requests_running": engine.num_running if alive else 0,
              "num_requests_waiting": loop.num_waiting,
              "kv_cache_pages_used": used, "kv_cache_pages_free": free, "kv_cache_pages_total": total,
              "kv_cache_usage_perc": used / total if total else 0.0,
              "prefix_cache_hit_rate": c["prefill_cached_tokens"] / queries if queries else 0.0}
    counters = {"prefix_cache_queries": queries, "prefix_cache_hits": c["prefill_cached_tokens"],
                "num_preemptions": engine.scheduler.num_preemptions if engine.scheduler is not None else 0}
    return gauges, counters
