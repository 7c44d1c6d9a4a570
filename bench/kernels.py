"""Kernel benchmarks: our Triton kernels against PyTorch's best, in roofline units.

    python -m bench.kernels                 # GPU: full run (~5-10 min on an H100)
    python -m bench.kernels --smoke         # CPU (Triton interpreter) or GPU: tiny shapes, checks the script
    python -m bench.kernels --only attn     # attn | elementwise | ce (comma-separated)
    python -m bench.kernels --sm90-report   # no GPU needed: compile the attention configs for sm_90
                                            # (triton.compile -> ptxas -v): registers, spills, smem

What is measured (bf16 unless noted; triton.testing.do_bench median, warm-up included):
  * attention, causal: forward and backward TFLOP/s of kernels.flash_attn vs
    torch.nn.functional.scaled_dot_product_attention with the FLASH_ATTENTION backend and, where
    available, CUDNN_ATTENTION; seq 1K..16K at a constant 16K tokens per batch, head_dim 64 and 128
    (2048 / head_dim heads, as in FlashAttention's benchmark), plus Qwen2.5-32B's GQA shape
    (40 q heads, 8 kv heads). FLOPs: 4*S*S*D*H*B/2 forward (causal half), x2.5 backward.
  * RMSNorm / RoPE / SwiGLU: effective GB/s (minimal HBM bytes / time) of forward and backward for
    ours vs the eager PyTorch reference (s1/kernels/reference.py) and torch.compile of it, at 32K tokens
    with Qwen2.5-32B widths.
  * measured memory bandwidth: a large device-to-device copy (dst.copy_(src), 1/2/4 GiB uint8;
    read + write bytes / median time), the denominator of the elementwise rows' fwd_pct_hbm /
    bwd_pct_hbm columns (target: >= 80% of measured HBM bandwidth). The spec sheet is
    not used: H100 SXM 3.35 TB/s nominal vs ~3.0 TB/s copy (bench/NOTES.md).
  * fused linear cross-entropy vs F.linear + F.cross_entropy(logits.float()), forward+backward time
    and peak memory above the inputs, at V = 151,936 and 32K tokens; the fused row carries
    time_ratio and mem_ratio (fused / materialized; targets <= 1.2x time, <= 0.25x memory).
    Peak memory is torch.cuda.max_memory_allocated on GPU; in the CPU smoke run it comes from
    torch.distributed._tools.mem_tracker.MemTracker (live tensors only; checks the code path).
Every row also checks the output against the reference (max abs error column), so a fast wrong
kernel cannot produce a good-looking table. Results: markdown table on stdout, JSON + md in
bench/results/kernels_<device>.{json,md} with device, commit, versions and date.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time

import torch

if not torch.cuda.is_available() and os.environ.get("S1_SM90_REPORT") != "1":
    os.environ.setdefault("TRITON_INTERPRET", "1")  # CPU smoke runs the kernels in the interpreter

import torch.nn.functional as F  # noqa: E402

from s1.kernels import reference as ref  # noqa: E402

GIB = 2 ** 30


# ------------------------------------------------------------------------------------- timing
def bench(fn, grad_to_none=None, smoke=False) -> float:
    """Median milliseconds of fn(). GPU: triton.testing.do_bench (L2 flushed, warm-up, no host sync
    inside the timed region). CPU smoke: median of 3 perf_counter runs."""
    if torch.cuda.is_available() and not smoke:
        import triton
        return float(triton.testing.do_bench(fn, warmup=25, rep=100, grad_to_none=grad_to_none,
                                             return_mode="median"))
    times = []
    for _ in range(3):
        if grad_to_none:
            for t in grad_to_none:
                t.grad = None
        t0 = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def maxerr(a, b) -> float:
    return float((a.detach().float() - b.detach().float()).abs().max())


# ------------------------------------------------------------------------------------- bandwidth
# the kernel targets, recorded in the JSON next to the numbers they apply to
TARGETS = {"elementwise_pct_hbm_min": 80.0, "ce_mem_ratio_max": 0.25, "ce_time_ratio_max": 1.2}
ELEMENTWISE = ("rms_norm", "rope", "swiglu")


def measure_bandwidth(smoke: bool, sizes: list[int] | None = None) -> tuple[dict, list[dict]]:
    """Measured memory bandwidth: dst.copy_(src) on uint8 buffers, (read + write) bytes / median
    time, for each size; the best size is the reference. GPU: 1, 2 and 4 GiB (as far as free
    memory allows) through do_bench, i.e. a device-to-device copy of HBM. CPU smoke: 1 and 4 MiB
    of host memory (exercises the code path; not a bandwidth number). Returns (summary, rows)."""
    cuda = torch.cuda.is_available()
    dev = "cuda" if cuda else "cpu"
    if sizes is None:
        sizes = [2 ** 20, 4 * 2 ** 20] if smoke or not cuda else [GIB, 2 * GIB, 4 * GIB]
    rows, best = [], None
    for n in sizes:
        label = next(f"{n / u:g} {name}" for u, name in ((GIB, "GiB"), (2 ** 20, "MiB"), (2 ** 10, "KiB"), (1, "B"))
                     if n >= u or u == 1)
        row = dict(kernel="bandwidth_copy", shape=label, impl="dst.copy_(src) uint8")
        if cuda:
            free, _ = torch.cuda.mem_get_info()
            if 2 * n > 0.8 * free:
                row["note"] = f"skipped: 2 x {label} > 80% of free memory ({free / GIB:.1f} GiB)"
                rows.append(row)
                continue
        try:
            src = torch.empty(n, dtype=torch.uint8, device=dev).random_(0, 256)
            dst = torch.zeros(n, dtype=torch.uint8, device=dev)  # touch every page before timing
            ms = bench(lambda: dst.copy_(src), smoke=smoke)
            if not torch.equal(dst, src):
                raise RuntimeError("copy produced wrong bytes")
            row.update(fwd_ms=ms, fwd_gbps=2 * n / ms / 1e6)
            if best is None or row["fwd_gbps"] > best["fwd_gbps"]:
                best = row
            src = dst = None  # free before the next size
        except (torch.OutOfMemoryError, RuntimeError) as e:
            row["note"] = f"error: {type(e).__name__}: {str(e)[:80]}"
        rows.append(row)
        if cuda:
            torch.cuda.empty_cache()
    summary = {
        "method": "dst.copy_(src), uint8; GB/s = 2 * bytes (read + write) / median time / 1e9; best size",
        "memory": "device HBM (device-to-device copy)" if cuda else "host DRAM (CPU smoke: tiny buffers, not a measurement)",
        "gbps": best["fwd_gbps"] if best else None,
        "size": best["shape"] if best else None,
        "per_size_gbps": {r["shape"]: r.get("fwd_gbps") for r in rows},
    }
    return summary, rows


def add_pct_of_bandwidth(rows: list[dict], gbps: float | None) -> None:
    """fwd_pct_hbm / bwd_pct_hbm = achieved GB/s as % of the measured copy bandwidth, for every
    elementwise row (ours, eager, torch.compile) that has a measurement; None if no bandwidth."""
    for r in rows:
        if r.get("kernel") not in ELEMENTWISE:
            continue
        for d in ("fwd", "bwd"):
            if f"{d}_gbps" in r:
                r[f"{d}_pct_hbm"] = 100.0 * r[f"{d}_gbps"] / gbps if gbps else None


# ------------------------------------------------------------------------------------- attention
def _sdpa_backends():
    from torch.nn.attention import SDPBackend
    out = [("sdpa-flash", SDPBackend.FLASH_ATTENTION)]
    if torch.cuda.is_available():
        out.append(("sdpa-cudnn", SDPBackend.CUDNN_ATTENTION))
    return out


def bench_attention(dtype, smoke):
    from torch.nn.attention import sdpa_kernel

    from s1.kernels.flash_attn import attention, attention_flops
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if smoke:
        shapes = [(1, 96, 2, 2, 64), (1, 80, 4, 1, 128)]  # (B, S, Hq, Hk, D)
    else:
        shapes = [(16384 // S, S, 2048 // D, 2048 // D, D) for D in (64, 128)
                  for S in (1024, 2048, 4096, 8192, 16384)]
        shapes += [(1, S, 40, 8, 128) for S in (4096, 16384)]  # Qwen2.5-32B GQA
    rows = []
    for B, S, Hq, Hk, D in shapes:
        gen = torch.Generator(device=dev).manual_seed(0)
        q = torch.randn(B * S, Hq, D, device=dev, dtype=dtype, generator=gen, requires_grad=True)
        k = torch.randn(B * S, Hk, D, device=dev, dtype=dtype, generator=gen, requires_grad=True)
        v = torch.randn(B * S, Hk, D, device=dev, dtype=dtype, generator=gen, requires_grad=True)
        do = torch.randn(B * S, Hq, D, device=dev, dtype=dtype, generator=gen)
        cu = torch.arange(0, (B + 1) * S, S, dtype=torch.int32, device=dev)
        scale = D ** -0.5
        f_fwd = attention_flops([S] * B, [S] * B, Hq, D, causal=True)
        f_bwd = attention_flops([S] * B, [S] * B, Hq, D, causal=True, backward=True)
        shape = f"B={B} S={S} Hq={Hq} Hk={Hk} D={D}"
        # the SDPA layout [B, H, S, D] (contiguous), same values
        qs, ks, vs = (t.detach().view(B, S, -1, D).transpose(1, 2).contiguous().requires_grad_() for t in (q, k, v))
        dos = do.view(B, S, Hq, D).transpose(1, 2).contiguous()

        def ours():
            return attention(q, k, v, cu, cu, S, S, scale, True)

        out = ours()
        want = None
        impls = [("triton (ours)", ours, out, (q, k, v), do)]
        for name, backend in _sdpa_backends():
            def sdpa(backend=backend):
                with sdpa_kernel([backend]):
                    return F.scaled_dot_product_attention(qs, ks, vs, is_causal=True, scale=scale,
                                                          enable_gqa=Hq != Hk)
            try:
                o = sdpa()
                impls.append((name, sdpa, o.transpose(1, 2).reshape(B * S, Hq, D), (qs, ks, vs), dos))
                if want is None:
                    want = impls[-1][2]
            except Exception as e:  # backend not available for this shape/device
                rows.append(dict(kernel="attention", shape=shape, impl=name, note=f"unavailable: {type(e).__name__}: {str(e)[:80]}"))
        for name, fn, o, leaves, dout in impls:
            row = dict(kernel="attention", shape=shape, impl=name)
            try:
                ms_f = bench(fn, smoke=smoke)
                o = fn()
                ms_b = bench(lambda: o.backward(dout, retain_graph=True), grad_to_none=list(leaves), smoke=smoke)
                row.update(fwd_ms=ms_f, fwd_tflops=f_fwd / ms_f / 1e9, bwd_ms=ms_b, bwd_tflops=f_bwd / ms_b / 1e9)
                if want is not None and name == "triton (ours)":
                    row["max_err_vs_sdpa"] = maxerr(o, want)
                if name == "triton (ours)" and smoke:  # smoke: also check against the reference
                    row["max_err_vs_reference"] = maxerr(o, ref.attention(q, k, v, cu, cu, S, S, scale, True))
            except torch.OutOfMemoryError:
                row["note"] = "OOM"
            rows.append(row)
            o = None
        q = k = v = qs = ks = vs = impls = None  # free before the next shape (closures above are done)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return rows


# ------------------------------------------------------------------------------------- elementwise
def bench_elementwise(dtype, smoke, use_compile):
    from s1.kernels import triton_ops as tri
    from s1.model.qwen2 import rope_cos_sin
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    T = 64 if smoke else 32768
    H, I, Hq, Hk, D = (96, 160, 4, 2, 64) if smoke else (5120, 27648, 40, 8, 128)  # Qwen2.5-32B widths
    es = torch.tensor([], dtype=dtype).element_size()
    gen = torch.Generator(device=dev).manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, device=dev, dtype=dtype, generator=gen, requires_grad=True)

    x, w = rnd(T, H), torch.ones(H, device=dev, dtype=dtype, requires_grad=True)
    g, u = rnd(T, I), rnd(T, I)
    q, k = rnd(T, Hq, D), rnd(T, Hk, D)
    cos, sin = rope_cos_sin(torch.arange(T, device=dev), D, 1e6)
    # minimal HBM bytes: every input read once, every output written once
    cases = [
        ("rms_norm", f"T={T} H={H}", lambda m: m.rms_norm(x, w, 1e-6), (x, w),
         2 * T * H * es, 3 * T * H * es),
        ("rope", f"T={T} Hq={Hq} Hk={Hk} D={D}", lambda m: m.rope(q, k, cos, sin), (q, k),
         2 * T * (Hq + Hk) * D * es + 2 * T * D * 4, 2 * T * (Hq + Hk) * D * es + 2 * T * D * 4),
        ("swiglu", f"T={T} I={I}", lambda m: m.swiglu(g, u), (g, u),
         3 * T * I * es, 5 * T * I * es),
    ]

    class Compiled:  # torch.compile of the eager reference, one compiled function per op
        rms_norm = staticmethod(torch.compile(ref.rms_norm)) if use_compile else None
        rope = staticmethod(torch.compile(ref.rope)) if use_compile else None
        swiglu = staticmethod(torch.compile(ref.swiglu)) if use_compile else None

    rows = []
    for kname, shape, call, leaves, bytes_f, bytes_b in cases:
        want = call(ref)
        want = want if isinstance(want, tuple) else (want,)
        for impl, mod in (("triton (ours)", tri), ("eager", ref), ("torch.compile", Compiled)):
            row = dict(kernel=kname, shape=shape, impl=impl)
            if impl == "torch.compile" and not use_compile:
                row["note"] = "skipped (--no-compile / smoke)"
                rows.append(row)
                continue
            try:
                out = call(mod)
                out = out if isinstance(out, tuple) else (out,)
                row["max_err_vs_eager"] = max(maxerr(a, b) for a, b in zip(out, want))
                grads_out = [torch.randn_like(o) for o in out]
                ms_f = bench(lambda: call(mod), smoke=smoke)
                ms_b = bench(lambda: torch.autograd.backward(out, grads_out, retain_graph=True),
                             grad_to_none=list(leaves), smoke=smoke)
                row.update(fwd_ms=ms_f, fwd_gbps=bytes_f / ms_f / 1e6, bwd_ms=ms_b, bwd_gbps=bytes_b / ms_b / 1e6)
            except Exception as e:
                row["note"] = f"error: {type(e).__name__}: {str(e)[:100]}"
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------- cross-entropy
def bench_ce(dtype, smoke):
    from s1.kernels import triton_ops as tri
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    N, H, V = (96, 64, 1500) if smoke else (32768, 5120, 151936)
    gen = torch.Generator(device=dev).manual_seed(0)
    hidden = (torch.randn(N, H, device=dev, dtype=dtype, generator=gen)).requires_grad_()
    weight = (torch.randn(V, H, device=dev, dtype=dtype, generator=gen) * H ** -0.5).requires_grad_()
    labels = torch.randint(0, V, (N,), device=dev, generator=gen)
    labels[: N // 10] = -100

    def fused():
        return tri.linear_cross_entropy(hidden, weight, labels)

    def materialized():
        return F.cross_entropy(F.linear(hidden, weight).float(), labels, ignore_index=-100, reduction="sum")

    rows = []
    losses = {}
    for impl, fn in (("fused triton (ours)", fused), ("F.linear + F.cross_entropy", materialized)):
        row = dict(kernel="linear_cross_entropy", shape=f"N={N} H={H} V={V}", impl=impl)
        try:
            hidden.grad = weight.grad = None
            loss, row["peak_mem_gib"] = _peak_memory(lambda: _fwd_bwd(fn))
            losses[impl] = loss
            hidden.grad = weight.grad = None
            row["fwd_bwd_ms"] = bench(lambda: fn().backward(), grad_to_none=[hidden, weight], smoke=smoke)
            row["loss"] = losses[impl]
        except torch.OutOfMemoryError:
            row["note"] = "OOM"
        rows.append(row)
    if len(losses) == 2:
        a, b = losses.values()
        rows[0]["rel_err_loss"] = abs(a - b) / abs(b)
    # fused / materialized; targets: time_ratio <= 1.2, mem_ratio <= 0.25 (None: not measured)
    ms = [r.get("fwd_bwd_ms") for r in rows]
    mem = [r.get("peak_mem_gib") for r in rows]
    rows[0]["time_ratio"] = ms[0] / ms[1] if ms[0] and ms[1] else None
    rows[0]["mem_ratio"] = mem[0] / mem[1] if mem[0] and mem[1] else None
    return rows


def _fwd_bwd(fn) -> float:
    loss = fn()
    loss.backward()
    return loss.item()


def _peak_memory(fn):
    """(fn(), peak GiB allocated while fn ran, above what was allocated before it). GPU: the
    caching allocator's peak; it includes the gradients fn leaves behind. CPU: MemTracker's peak
    of live tensors created inside (a check of the code path, not a number to quote); None if
    unavailable."""
    if torch.cuda.is_available():
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
        out = fn()
        torch.cuda.synchronize()
        return out, (torch.cuda.max_memory_allocated() - base) / GIB
    try:
        from torch.distributed._tools.mem_tracker import MemTracker
        tracker = MemTracker()
    except Exception:
        return fn(), None
    with tracker:
        out = fn()
    peak = tracker.get_tracker_snapshot("peak")
    total = sum(v.get("Total", 0) for v in peak.values())
    return out, total / GIB if total else None


# ------------------------------------------------------------------------------------- sm_90 compile report
def sm90_report() -> list[dict]:
    """Compile every autotune candidate of the three attention kernels for sm_90 (H100/H200) with
    Triton's NVIDIA backend, then ask ptxas for registers and spills. Needs no GPU: a static check
    that the configs compile, fit shared memory, and use wgmma, and which ones spill."""
    import subprocess
    import tempfile

    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    import s1.kernels.flash_attn as fa
    assert os.environ.get("TRITON_INTERPRET", "0") != "1", "the sm_90 report must not run under the interpreter"
    bindir = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin")
    ptxas = next((os.path.join(bindir, n) for n in ("ptxas-blackwell", "ptxas") if os.path.exists(os.path.join(bindir, n))), None)
    ptr = {n: "*bf16" for n in ("Q", "K", "V", "O", "DO", "DK", "DV", "DQ")}
    ptr.update(LSE="*fp32", DELTA="*fp32", cu_q="*i32", cu_k="*i32")
    kerns = {"fwd": fa._attn_fwd_kernel, "dkdv": fa._attn_bwd_dkdv_kernel, "dq": fa._attn_bwd_dq_kernel}
    rows = []
    for kind, kern in kerns.items():
        for D in (64, 128):
            for c in fa._tune_configs(kind):
                cex = dict(GROUP=4, HEAD_DIM=D, CAUSAL=True, DOT_PREC="tf32", **c.kwargs)
                names = kern.arg_names
                sig = {n: "constexpr" if n in cex else ptr.get(n, "fp32" if n in ("qk_scale", "sm_scale") else "i32")
                       for n in names}
                row = dict(kernel=f"attn_{kind}", shape=f"bf16 D={D} GQA 4", impl=str(c.kwargs),
                           warps=c.num_warps, stages=c.num_stages)
                try:
                    ck = triton.compile(ASTSource(fn=kern, signature=sig,
                                                  constexprs={(names.index(k),): v for k, v in cex.items()}),
                                        target=GPUTarget("cuda", 90, 32),
                                        options={"num_warps": c.num_warps, "num_stages": c.num_stages})
                    ptx = ck.asm["ptx"]
                    row.update(smem_bytes=ck.metadata.shared, wgmma=ptx.count("wgmma.mma_async"),
                               mma_sync=ptx.count("mma.sync"))
                    if ptxas:
                        with tempfile.TemporaryDirectory() as d:
                            f = os.path.join(d, "k.ptx")
                            with open(f, "w") as fh:
                                fh.write(ptx)
                            out = subprocess.run([ptxas, "-v", "--gpu-name=sm_90a", f, "-o", os.path.join(d, "k.cubin")],
                                                 capture_output=True, text=True).stderr
                        m = re.search(r"Used (\d+) registers", out)
                        sp = re.search(r"(\d+) bytes spill stores", out)
                        row.update(registers=int(m.group(1)) if m else None, spill_bytes=int(sp.group(1)) if sp else None)
                except Exception as e:
                    row["note"] = f"compile error: {type(e).__name__}: {str(e)[:120]}"
                rows.append(row)
                print(row, file=sys.stderr, flush=True)
    return rows


# ------------------------------------------------------------------------------------- report
COLS = ["kernel", "shape", "impl", "warps", "stages", "registers", "spill_bytes", "smem_bytes", "wgmma", "mma_sync", "fwd_ms", "fwd_tflops", "fwd_gbps", "fwd_pct_hbm", "bwd_ms", "bwd_tflops", "bwd_gbps", "bwd_pct_hbm",
        "fwd_bwd_ms", "peak_mem_gib", "time_ratio", "mem_ratio", "max_err_vs_sdpa", "max_err_vs_reference",
        "max_err_vs_eager", "rel_err_loss", "note"]


def markdown(rows) -> str:
    cols = [c for c in COLS if any(c in r for r in rows)]

    def fmt(v):
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1 else f"{v:.1f}" if abs(v) < 1e4 else f"{v:.3g}"
        return "" if v is None else str(v)
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def _fmt_gbps(g) -> str:
    return "n/a" if g is None else f"{g:.1f} GB/s"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--smoke", action="store_true", help="tiny shapes; runs on CPU under the Triton interpreter")
    ap.add_argument("--only", default="attn,elementwise,ce", help="comma-separated subset of attn,elementwise,ce")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile baselines")
    ap.add_argument("--out", default=None, help="output stem (default bench/results/kernels_<device>; with --smoke a "
                    "temporary folder: a smoke run never overwrites a recorded result)")
    ap.add_argument("--sm90-report", action="store_true",
                    help="compile the attention configs for sm_90 and report registers/spills (no GPU needed)")
    a = ap.parse_args(argv)
    if a.sm90_report:
        return _sm90_main(a)
    smoke_stem = None
    if a.smoke:      # a temporary folder (or a named --out): never over the recorded results
        from bench import smoke_output
        try:
            smoke_stem = smoke_output("kernels_smoke", a.out, (".json", ".md"))
        except ValueError as e:
            ap.error(str(e))
    parts = {p.strip() for p in a.only.split(",") if p.strip()}
    unknown = parts - {"attn", "elementwise", "ce"}
    if unknown:
        ap.error(f"--only: unknown part(s) {sorted(unknown)}; choose from attn, elementwise, ce")
    if not torch.cuda.is_available() and not a.smoke:
        print("bench.kernels: no CUDA device; the full benchmark needs a GPU. Use --smoke on CPU.", file=sys.stderr)
        return 2
    from s1.common.env import environment
    env = environment()
    # fp16 in the CPU smoke run: the interpreter's bf16 arithmetic is broken (bench/NOTES.md)
    dtype = torch.bfloat16 if torch.cuda.is_available() else torch.float16
    rows = []
    t0 = time.time()
    # first, while the device memory is empty: the denominator of the elementwise % columns
    bandwidth, bw_rows = measure_bandwidth(a.smoke)
    rows += bw_rows
    print(f"bandwidth probe done ({time.time() - t0:.0f}s): {bandwidth['gbps']} GB/s", file=sys.stderr, flush=True)
    if "attn" in parts:
        rows += bench_attention(dtype, a.smoke)
        print(f"attention done ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    if "elementwise" in parts:
        ew = bench_elementwise(dtype, a.smoke, use_compile=not (a.no_compile or a.smoke))
        add_pct_of_bandwidth(ew, bandwidth["gbps"])
        rows += ew
        print(f"elementwise done ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    if "ce" in parts:
        rows += bench_ce(dtype, a.smoke)
        print(f"cross-entropy done ({time.time() - t0:.0f}s)", file=sys.stderr, flush=True)
    table = markdown(rows)
    head = (f"# Kernel benchmark{' (SMOKE: tiny shapes, not a performance measurement)' if a.smoke else ''}\n\n"
            f"device: {env['device']} | commit {env['commit']}{' (dirty)' if env.get('dirty') else ''} | "
            f"torch {env['torch']} | triton {env['triton']} | cuda {env['cuda']} | {env['date']} | dtype {dtype}\n\n"
            f"measured bandwidth: {_fmt_gbps(bandwidth['gbps'])} ({bandwidth['memory']}; best of "
            f"{', '.join(bandwidth['per_size_gbps'])}; {bandwidth['method']}). *_pct_hbm = achieved GB/s as % of "
            f"it (target >= {TARGETS['elementwise_pct_hbm_min']:g}% for RMSNorm/RoPE/SwiGLU). Cross-entropy: "
            f"time_ratio / mem_ratio = fused / materialized (targets <= {TARGETS['ce_time_ratio_max']:g}x time, "
            f"<= {TARGETS['ce_mem_ratio_max']:g}x peak memory).\n")
    print(head)
    print(table)
    slug = re.sub(r"[^A-Za-z0-9]+", "_", env["device"]).strip("_").lower()[:40]
    stem = smoke_stem or a.out or os.path.join("bench", "results", f"kernels_{slug}")
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "smoke": a.smoke, "dtype": str(dtype), "bandwidth": bandwidth, "targets": TARGETS,
                   "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(head + "\n" + table + "\n")
    print(f"\nwrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


def _sm90_main(a) -> int:
    if os.environ.get("TRITON_INTERPRET", "0") == "1":  # kernels were defined for the interpreter: re-exec
        import subprocess
        env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
        env["S1_SM90_REPORT"] = "1"
        env.setdefault("TRITON_DEFAULT_FP_FUSION", "1")
        args = [sys.executable, "-m", "bench.kernels", "--sm90-report"] + (["--out", a.out] if a.out else [])
        return subprocess.run(args, env=env).returncode
    from s1.common.env import environment
    env = environment()
    rows = sm90_report()
    head = (f"# Attention kernels compiled for sm_90 (static: no GPU run)\n\nhost: {env['device']} | commit "
            f"{env['commit']}{' (dirty)' if env.get('dirty') else ''} | triton {env['triton']} | {env['date']}\n")
    table = markdown(rows)
    print(head)
    print(table)
    stem = a.out or os.path.join("bench", "results", "kernels_sm90_compile")
    os.makedirs(os.path.dirname(stem) or ".", exist_ok=True)
    with open(stem + ".json", "w") as f:
        json.dump({"env": env, "rows": rows}, f, indent=1)
    with open(stem + ".md", "w") as f:
        f.write(head + "\n" + table + "\n")
    print(f"\nwrote {stem}.json and {stem}.md", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
