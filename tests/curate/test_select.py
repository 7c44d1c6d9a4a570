"""The selector (s1/curate/select.py): reproducible by seed, draws that follow the rank law,
uniform domains, the ablation selectors."""
import math
from collections import Counter

import pytest

from s1.curate.select import rank_weights, select


def chi2_sf(x: float, k: int) -> float:
    """Survival function of the chi-square distribution (regularized upper gamma Q(k/2, x/2))."""
    a, x = k / 2.0, x / 2.0
    if x < a + 1:   # series for P, then Q = 1 - P
        term = total = 1.0 / a
        for n in range(1, 500):
            term *= x / (a + n)
            total += term
        return 1.0 - total * math.exp(-x + a * math.log(x) - math.lgamma(a))
    b, c, d = x + 1 - a, 1e300, 1.0 / (x + 1 - a)   # continued fraction (Numerical Recipes gcf)
    h = d
    for i in range(1, 500):
        an = -i * (i - a)
        b += 2
        d = 1.0 / (an * d + b)
        c = b + an / c
        h *= d * c
    return math.exp(-x + a * math.log(x) - math.lgamma(a)) * h


def _cands(n_per_domain: dict[str, int]):
    out = []
    for d, n in n_per_domain.items():
        for i in range(n):
            out.append({"id": f"{d}-{i:03d}", "domain": d, "trace_tokens": 1000 - 7 * i})
    return out


def test_select_reproducible_by_seed():
    c = _cands({"05": 30, "11": 20, "51": 5})
    a = [r["id"] for r in select(c, 20, seed=3)]
    assert a == [r["id"] for r in select(c, 20, seed=3)]
    assert a != [r["id"] for r in select(c, 20, seed=4)]
    assert len(set(a)) == 20                                    # without replacement
    assert len(select(c, 1000, seed=0)) == 55                   # all, when size > pool
    for m in ("random", "longest", "diverse"):
        assert select(c, 10, 1, m) == select(c, 10, 1, m)


def test_select_draws_follow_rank_law():
    """One domain, 10 questions: the first draw's rank must follow p_r ∝ 2^-r (chi-square test,
    fixed seeds); the same counts must reject a uniform law."""
    c = _cands({"05": 10})
    rng_seeds = range(4000)
    ranks = Counter(int(select(c, 1, seed=s)[0]["id"].split("-")[1]) for s in rng_seeds)
    n = len(rng_seeds)
    p = rank_weights(10)
    # merge the tail so every expected count is >= 5
    k = next(i for i in range(10) if p[i:].sum() * n < 10)
    obs = [ranks[i] for i in range(k)] + [sum(ranks[i] for i in range(k, 10))]
    exp = [p[i] * n for i in range(k)] + [p[k:].sum() * n]
    stat = sum((o - e) ** 2 / e for o, e in zip(obs, exp))
    assert chi2_sf(stat, len(obs) - 1) > 0.001, (obs, exp)
    stat_u = sum((o - n / len(obs)) ** 2 / (n / len(obs)) for o in obs)
    assert chi2_sf(stat_u, len(obs) - 1) < 1e-6
    # rank 0 (longest) is drawn about half the time
    assert abs(ranks[0] / n - 0.5) < 0.03


def test_select_later_draws_use_remaining_ranks():
    """After removals, ranks are recomputed over what is left: with 2 items the second draw is forced."""
    c = _cands({"05": 3})
    firsts = Counter()
    for s in range(3000):
        ids = [r["id"] for r in select(c, 2, seed=s)]
        firsts[tuple(ids)] += 1
    # P(first=0)=4/7, then second is the longer remaining one with prob 2/3
    p = {("05-000", "05-001"): 4 / 7 * 2 / 3, ("05-000", "05-002"): 4 / 7 / 3,
         ("05-001", "05-000"): 2 / 7 * 2 / 3, ("05-001", "05-002"): 2 / 7 / 3,
         ("05-002", "05-000"): 1 / 7 * 2 / 3, ("05-002", "05-001"): 1 / 7 / 3}
    stat = sum((firsts[k] - v * 3000) ** 2 / (v * 3000) for k, v in p.items())
    assert chi2_sf(stat, 5) > 0.001, firsts


def test_select_domains_uniform():
    c = _cands({"05": 200, "11": 3})
    counts = Counter(select(c, 1, seed=s)[0]["domain"] for s in range(2000))
    assert abs(counts["11"] / 2000 - 0.5) < 0.04          # domain first, regardless of its size
    chosen = select(c, 10, seed=0)
    assert sum(r["domain"] == "11" for r in chosen) == 3   # a small domain is exhausted, then dropped


def test_ablation_selectors_and_preselected():
    c = _cands({"05": 30, "11": 20})
    longest = select(c, 5, 0, "longest")
    assert [r["trace_tokens"] for r in longest] == sorted((r["trace_tokens"] for r in c), reverse=True)[:5]
    rnd = select(c, 50, 0, "random")
    assert sorted(r["id"] for r in rnd) == sorted(r["id"] for r in c)
    div = select(c, 10, 0, "diverse")
    assert len({r["id"] for r in div}) == 10
    pre = select(c, 5, 0, "s1", preselected_ids=["11-019", "05-029"])
    assert [r["id"] for r in pre[:2]] == ["11-019", "05-029"] and len(pre) == 5 and len({r["id"] for r in pre}) == 5
    with pytest.raises(ValueError, match="pre-selected"):
        select(c, 5, 0, "s1", preselected_ids=["nope"])
    with pytest.raises(ValueError, match="unknown selector"):
        select(c, 5, 0, "best")
