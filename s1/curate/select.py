"""Selection of the project recipe (s1 §2.2, Algorithm 1) and the ablation selectors, all seeded
(numpy Generator). `--recipe s1` uses s1's own two-phase sampler instead (s1rules.sample).

s1: repeat until `size` questions are chosen: pick a domain uniformly at random among the domains
that still have candidates; inside it rank the remaining questions by trace length (longest =
rank 0; ties broken by id so the order is total) and draw one with probability ∝ 2^(-rank);
remove it. Pre-selected items are taken first and count toward `size` (s1 pre-selects ~384
AIME/GPQA/long-MATH items; its sampler is unseeded, ours is reproducible by seed).
Ablations (s1 §5.1): random (uniform without replacement), longest (top by trace length),
diverse (uniform domain, then uniform inside it).
"""
from __future__ import annotations

import numpy as np

SELECTORS = ("s1", "random", "longest", "diverse")


def rank_weights(n: int) -> np.ndarray:
    """p_r ∝ 2^(-r), r = 0..n-1 (computed in log space: 2^-1100 underflows, the ratio does not matter)."""
    w = np.exp2(-np.arange(n, dtype=np.float64))
    return w / w.sum()


def _by_length(items: list[dict]) -> list[dict]:
    return sorted(items, key=lambda r: (-(r.get("trace_tokens") or 0), r["id"]))


def select(records: list[dict], size: int, seed: int = 0, method: str = "s1", preselected_ids=()) -> list[dict]:
    """Return the chosen records in draw order (pre-selected first)."""
    if method not in SELECTORS:
        raise ValueError(f"unknown selector {method!r}; choose one of {SELECTORS}")
    if size < 0:
        raise ValueError(f"size must be >= 0, got {size}")
    by_id = {r["id"]: r for r in records}
    missing = [i for i in preselected_ids if i not in by_id]
    if missing:
        raise ValueError(f"{len(missing)} pre-selected ids are not among the candidates, e.g. {missing[:3]}")
    chosen = [by_id[i] for i in dict.fromkeys(preselected_ids)][:size]
    taken = {r["id"] for r in chosen}
    pool = [r for r in records if r["id"] not in taken]
    k = min(size - len(chosen), len(pool))
    rng = np.random.default_rng(seed)
    if method == "random":
        idx = rng.choice(len(pool), size=k, replace=False) if k else []
        return chosen + [pool[i] for i in idx]
    if method == "longest":
        return chosen + _by_length(pool)[:k]
    # s1 / diverse: per-domain candidate lists, sorted by trace length (longest first)
    groups: dict[str, list[dict]] = {}
    for r in pool:
        groups.setdefault(r["domain"], []).append(r)
    for d in groups:
        groups[d] = _by_length(groups[d])
    domains = sorted(groups)
    for _ in range(k):
        d = domains[int(rng.integers(len(domains)))]
        cands = groups[d]
        if method == "s1":
            j = int(rng.choice(len(cands), p=rank_weights(len(cands))))
        else:
            j = int(rng.integers(len(cands)))
        chosen.append(cands.pop(j))     # remaining ranks shift up: rank = position in the sorted list
        if not cands:
            domains.remove(d)
    return chosen
