"""Helpers only the tests use, moved out of the library (the s1 package keeps what it runs).

    ContiguousKVCache      the model's KV-cache protocol with one contiguous slot per sequence
                           (HF parity of decoding, tensor-parallel decode steps)   [s1/model/cache.py]
    full_shapes, plan_numel, kv_cache_shape, param_bytes
                           what a tensor-parallel rank should hold, computed independently of the
                           loader                                       [s1/infer/tensor_parallel.py]
    uniform_noise_i64, h32_i32
                           the int64 spec of the sampler's noise, the oracle of the int32 / Triton
                           versions                                      [s1/kernels/reference.py]
    serve_in_thread        `s1 serve`'s app under uvicorn on a background thread  [s1/serve/cli.py]
"""
from __future__ import annotations

import torch

from s1.model.config import Qwen2Config


# ----------------------------------------------------------------------------- model: KV cache
class ContiguousKVCache:
    """A simple contiguous KV cache implementing the model's cache protocol (s1/model/qwen2.py):
    one slot per sequence, `max_len` positions each. The caller describes the step's batch with
    `prepare(...)` before the forward and calls `advance()` after it."""

    def __init__(self, cfg: Qwen2Config, num_slots: int, max_len: int,
                 device="cpu", dtype: torch.dtype | None = None):
        dtype = dtype or cfg.dtype
        shape = (cfg.num_hidden_layers, num_slots, max_len, cfg.num_key_value_heads, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.lengths = [0] * num_slots
        self.max_len = max_len
        self._step = None

    def prepare(self, slots: list[int], num_new: list[int]) -> torch.Tensor:
        """Declare this step's batch: packed tokens are num_new[i] tokens of slots[i], in order.

        Returns the [T] positions of those tokens (continuing each slot's cached length).
        """
        if len(slots) != len(num_new):
            raise ValueError("slots and num_new must have the same length")
        pos, cu_q, cu_k = [], [0], [0]
        for s, n in zip(slots, num_new):
            start = self.lengths[s]
            if start + n > self.max_len:
                raise ValueError(f"slot {s}: {start + n} tokens exceed the cache length {self.max_len}")
            pos.extend(range(start, start + n))
            cu_q.append(cu_q[-1] + n)
            cu_k.append(cu_k[-1] + start + n)
        dev = self.k.device
        self._step = dict(slots=list(slots), num_new=list(num_new),
                          cu_q=torch.tensor(cu_q, dtype=torch.int32, device=dev),
                          cu_k=torch.tensor(cu_k, dtype=torch.int32, device=dev),
                          max_q=max(num_new), max_k=max(self.lengths[s] + n for s, n in zip(slots, num_new)))
        return torch.tensor(pos, dtype=torch.long, device=dev)

    def attend(self, layer_idx: int, q, k, v, scale: float, ops):
        st = self._step
        if st is None:
            raise RuntimeError("ContiguousKVCache.attend called before prepare()")
        ks, vs, off = [], [], 0
        for s, n in zip(st["slots"], st["num_new"]):
            start = self.lengths[s]
            self.k[layer_idx, s, start:start + n] = k[off:off + n]
            self.v[layer_idx, s, start:start + n] = v[off:off + n]
            ks.append(self.k[layer_idx, s, :start + n])
            vs.append(self.v[layer_idx, s, :start + n])
            off += n
        return ops.attention(q, torch.cat(ks), torch.cat(vs), st["cu_q"], st["cu_k"],
                             st["max_q"], st["max_k"], scale, True)

    def advance(self) -> None:
        for s, n in zip(self._step["slots"], self._step["num_new"]):
            self.lengths[s] += n
        self._step = None


# ----------------------------------------------------------------------------- tensor parallelism
def full_shapes(cfg: Qwen2Config) -> dict[str, tuple[int, ...]]:
    """Unsharded shape of every parameter / checkpoint tensor (HF names), from the config."""
    from s1.model import loading
    H, V, I = cfg.hidden_size, cfg.vocab_size, cfg.intermediate_size
    shapes = {}
    for name in loading.hf_name_map(cfg):
        leaf = name.rsplit(".", 2)[-2:]
        if name in ("model.embed_tokens.weight", "lm_head.weight"):
            s = (V, H)
        elif leaf[0] in ("q_norm", "k_norm"):  # Qwen3: per head, [head_dim]
            s = (cfg.head_dim,)
        elif name.endswith("norm.weight"):
            s = (H,)
        elif leaf[0] == "q_proj":
            s = (cfg.q_size, H) if leaf[1] == "weight" else (cfg.q_size,)
        elif leaf[0] in ("k_proj", "v_proj"):
            s = (cfg.kv_size, H) if leaf[1] == "weight" else (cfg.kv_size,)
        elif leaf[0] == "o_proj":
            s = (H, cfg.q_size)
        elif leaf[0] in ("gate_proj", "up_proj"):
            s = (I, H)
        elif leaf[0] == "down_proj":
            s = (H, I)
        else:
            raise KeyError(f"unknown tensor {name!r}")
        shapes[name] = s
    return shapes


def plan_numel(plan) -> dict[str, int]:
    """Elements of every parameter on a TPPlan's rank (HF names; tied: the embedding counted once)."""
    out = {}
    for name, shape in full_shapes(plan.cfg).items():
        shape = list(shape)
        part = plan.part(name)
        if part is not None:
            shape[part[0]] = part[2] - part[1]
        n = 1
        for d in shape:
            n *= d
        out[name] = n
    return out


def kv_cache_shape(cfg: Qwen2Config, tp, num_blocks: int, block_size: int) -> tuple[int, ...]:
    """Per-rank shape of each of K and V: [layers, num_blocks, block_size, local KV heads, head_dim]."""
    from s1.infer.tensor_parallel import head_shard
    return (cfg.num_hidden_layers, num_blocks, block_size,
            head_shard(cfg, tp.world_size, tp.rank).num_kv, cfg.head_dim)


def param_bytes(model: torch.nn.Module) -> int:
    """Bytes of the model's parameters on this rank (a tied embedding counted once)."""
    return sum(p.numel() * p.element_size() for p in model.parameters())


# ----------------------------------------------------------------------------- sampler noise
def h32_i32(x: torch.Tensor) -> torch.Tensor:
    """The reference's in-place int32 hash on a copy."""
    from s1.kernels.reference import _h32_i32_
    return _h32_i32_(x.clone())


def uniform_noise_i64(seed: torch.Tensor, pos: torch.Tensor, vocab: int) -> torch.Tensor:
    """The int64 spec of `uniform_noise` (s1/infer/budget.py's original code), kept as the oracle."""
    from s1.kernels.reference import _h32, _hashed_ids, _row_key
    k1 = _row_key(seed, pos)
    x = _h32(_hashed_ids(vocab, seed.device)[None, :] ^ k1[:, None])
    return ((x >> 9).to(torch.float32) + 0.5) * (1.0 / (1 << 23))


# ----------------------------------------------------------------------------- serving
def serve_in_thread(app, host: str = "127.0.0.1", port: int = 0, log_level: str = "warning",
                    timeout: float = 60.0):
    """Run `app` under uvicorn on a background thread: -> (server, thread, port).
    Stop it with `server.should_exit = True; thread.join()`."""
    import threading
    import time

    from s1.serve.cli import bind_socket, make_server
    sock = bind_socket(host, port)
    server = make_server(app, sock, log_level=log_level, access_log=False)
    th = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="s1-serve", daemon=True)
    th.start()
    t_end = time.monotonic() + timeout
    while not server.started:
        if not th.is_alive() or time.monotonic() > t_end:
            raise RuntimeError("the server did not start")
        time.sleep(0.02)
    return server, th, sock.getsockname()[1]
