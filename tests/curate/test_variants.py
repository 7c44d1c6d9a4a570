"""Training-data variants (s1/curate/variants.py): the TCC / SCC / CCC rewrites by hand, with a
trivial tokenizer stub (one token per whitespace-separated word), and `s1 curate variants` with
the demo task's real tokenizer."""
import json

import pytest

from s1.common.jsonl import write_jsonl
from s1.curate import variants
from s1.evaluation import methods
from s1.pipelines import toy as synthetic
from tests.helpers import WordTok


def rows3():
    """Three s1K-schema rows: 5, 6 and 8 thinking words -> trace tokens (words + 1) 6, 7, 9.
    r1 stores its trace as a plain string, r2 only in the deepseek columns."""
    return [
        {"question": "Q0", "solution": "S0", "thinking_trajectories": ["w1 w2 w3 w4 w5"], "attempt": "A0"},
        {"question": "Q1", "thinking_trajectories": "x1 x2 x3 x4 x5 x6", "attempt": "A1"},
        {"question": "Q2", "deepseek_thinking_trajectory": ["y1 y2 y3 y4 y5 y6 y7 y8"], "deepseek_attempt": "A2"},
    ]


def test_rewrite_tcc_by_hand():
    """tcc, step 2, grid (10, 16): marked traces have 3 tokens per marker, so r0 = 9+5+1 = 15 and
    r1 = 9+6+1 = 16 tokens fit only 16 (16 is the boundary case); r2 = 12+8+1 = 21 fits no grid
    value -> N = its own length 21 and it counts as outside the grid."""
    rows = rows3()
    before = json.dumps(rows)
    out, stats = variants.rewrite_traces(rows, "tcc", WordTok(), step_tokens=2, budget_grid=(10, 16))
    assert json.dumps(rows) == before  # inputs not modified
    assert [r["question"] for r in out] == ["Q0\n\nThink for up to 16 tokens.", "Q1\n\nThink for up to 16 tokens.",
                                            "Q2\n\nThink for up to 21 tokens."]
    assert out[0]["thinking_trajectories"] == ["[16 tokens left]\nw1 w2\n[9 tokens left]\nw3 w4\n[2 tokens left]\nw5"]
    assert out[1]["thinking_trajectories"] == "[16 tokens left]\nx1 x2\n[9 tokens left]\nx3 x4\n[2 tokens left]\nx5 x6"
    assert out[2]["deepseek_thinking_trajectory"] == [
        "[21 tokens left]\ny1 y2\n[14 tokens left]\ny3 y4\n[7 tokens left]\ny5 y6\n[0 tokens left]\ny7 y8"]
    assert "thinking_trajectories" not in out[2]
    assert [r["thinking_budget"] for r in out] == [16, 16, 21]
    assert [r["trace_tokens"] for r in out] == [15, 16, 21]
    assert {r["trace_variant"] for r in out} == {"tcc"}
    assert out[0]["solution"] == "S0" and out[0]["attempt"] == "A0" and out[2]["deepseek_attempt"] == "A2"
    assert stats == {"method": "tcc", "rows": 3, "step_tokens": 2,
                     "mean_trace_tokens_before": pytest.approx(22 / 3),
                     "mean_trace_tokens_after": pytest.approx(52 / 3),
                     "budget_grid": [10, 16], "budget_counts": {"10": 0, "16": 2}, "outside_grid": 1}


def test_rewrite_tcc_draws_only_fitting_grid_values():
    """A 6-token marked trace ("[N tokens left]" + 2 words + 1) fits 6 (exactly), 10 and 16 but not 4:
    over seeds the drawn N covers exactly {6, 10, 16}, and the trace's first marker states it."""
    rows = [{"question": "Q", "thinking_trajectories": ["a b"], "attempt": "A"}]
    seen = set()
    for seed in range(20):
        (r,), st = variants.rewrite_traces(rows, "tcc", WordTok(), step_tokens=2, budget_grid=(16, 4, 10, 6), seed=seed)
        n = r["thinking_budget"]
        seen.add(n)
        assert r["thinking_trajectories"] == [f"[{n} tokens left]\na b"] and r["trace_tokens"] == 6
        assert st["outside_grid"] == 0 and st["budget_grid"] == [16, 4, 10, 6]
    assert seen == {6, 10, 16}


def test_rewrite_scc_by_hand():
    """scc, step 2, no slack: 3, 3 and 4 steps; markers count down to 1; tokens per stated step =
    (15 + 16 + 21) / (3 + 3 + 4)."""
    out, stats = variants.rewrite_traces(rows3(), "scc", WordTok(), step_tokens=2)
    assert [r["question"] for r in out] == ["Q0\n\nThink for up to 3 steps.", "Q1\n\nThink for up to 3 steps.",
                                            "Q2\n\nThink for up to 4 steps."]
    assert out[0]["thinking_trajectories"] == ["[3 steps left]\nw1 w2\n[2 steps left]\nw3 w4\n[1 steps left]\nw5"]
    assert out[1]["thinking_trajectories"] == "[3 steps left]\nx1 x2\n[2 steps left]\nx3 x4\n[1 steps left]\nx5 x6"
    assert out[2]["deepseek_thinking_trajectory"] == [
        "[4 steps left]\ny1 y2\n[3 steps left]\ny3 y4\n[2 steps left]\ny5 y6\n[1 steps left]\ny7 y8"]
    assert [r["thinking_budget"] for r in out] == [3, 3, 4]
    assert [r["trace_tokens"] for r in out] == [15, 16, 21]
    assert stats == {"method": "scc", "rows": 3, "step_tokens": 2,
                     "mean_trace_tokens_before": pytest.approx(22 / 3),
                     "mean_trace_tokens_after": pytest.approx(52 / 3),
                     "step_slack": 0, "mean_steps": pytest.approx(10 / 3), "tokens_per_step": pytest.approx(5.2)}


def test_rewrite_scc_slack_adds_stated_steps():
    """With step_slack 2 a 3-step trace states 3..5 steps and counts down from what it states."""
    rows = [rows3()[0]]
    seen = set()
    for seed in range(30):
        (r,), _ = variants.rewrite_traces(rows, "scc", WordTok(), step_tokens=2, step_slack=2, seed=seed)
        n = r["thinking_budget"]
        seen.add(n)
        assert r["question"] == f"Q0\n\nThink for up to {n} steps."
        assert r["thinking_trajectories"] == [
            f"[{n} steps left]\nw1 w2\n[{n - 1} steps left]\nw3 w4\n[{n - 2} steps left]\nw5"]
    assert seen == {3, 4, 5}


def test_rewrite_ccc_by_hand():
    """ccc: traces unchanged; short iff trace tokens <= threshold (default: median of 6, 7, 9 = 7)."""
    out, stats = variants.rewrite_traces(rows3(), "ccc", WordTok())
    assert [r["question"] for r in out] == ["Q0\n\n" + methods.CCC_SHORT, "Q1\n\n" + methods.CCC_SHORT,
                                            "Q2\n\n" + methods.CCC_LONG]
    assert out[0]["thinking_trajectories"] == ["w1 w2 w3 w4 w5"]
    assert out[1]["thinking_trajectories"] == "x1 x2 x3 x4 x5 x6"
    assert out[2]["deepseek_thinking_trajectory"] == ["y1 y2 y3 y4 y5 y6 y7 y8"]
    assert [r["thinking_budget"] for r in out] == ["short", "short", "long"]
    assert [r["trace_tokens"] for r in out] == [6, 7, 9]
    assert stats == {"method": "ccc", "rows": 3, "step_tokens": 100, "mean_trace_tokens_before": pytest.approx(22 / 3),
                     "mean_trace_tokens_after": pytest.approx(22 / 3), "threshold": 7, "short": 2, "long": 1}
    out, stats = variants.rewrite_traces(rows3(), "ccc", WordTok(), threshold=6)
    assert [r["thinking_budget"] for r in out] == ["short", "long", "long"]
    assert (stats["threshold"], stats["short"], stats["long"]) == (6, 1, 2)


@pytest.mark.parametrize("kw, match", [
    (dict(method="bf"), "unknown trace variant 'bf'; choose one of tcc, scc, ccc"),
    (dict(method="scc", step_tokens=0), "step_tokens must be >= 1, got 0"),
    (dict(method="scc", step_slack=-1), "step_slack must be >= 0, got -1"),
    (dict(method="tcc", budget_grid=()), "budget grid must be positive integers"),
    (dict(method="tcc", budget_grid=(0, 8)), "budget grid must be positive integers"),
])
def test_rewrite_invalid_arguments(kw, match):
    """Bad method / step size / slack / grid: ValueError naming the problem."""
    kw = dict(kw)
    with pytest.raises(ValueError, match=match):
        variants.rewrite_traces(rows3(), kw.pop("method"), WordTok(), **kw)


def test_rewrite_bad_row_names_the_row():
    """A row without a trace is a DataError (a ValueError) naming the row and the missing column."""
    rows = rows3() + [{"question": "Q3", "attempt": "A3"}]
    with pytest.raises(ValueError, match=r"row 3: missing column .*reasoning trace"):
        variants.rewrite_traces(rows, "scc", WordTok())


@pytest.fixture(scope="module")
def digit_tokenizer(tmp_path_factory):
    """The demo task's real byte-level BPE (each trace item "a3=3" is 3 tokens: a, 3, =3)."""
    rows = synthetic.generate_pool(200, seed=0)
    return str(synthetic.build_tokenizer(rows, str(tmp_path_factory.mktemp("tok")), 1024))


def test_variants_cli_with_real_tokenizer(digit_tokenizer, tmp_path, capsys):
    """`s1 curate variants`: with 3 tokens per trace item and --step-tokens 3 every item is a step,
    so "a3 b5 c1" states 3 steps; output jsonl + stats written; a missing data file exits 2."""
    data = tmp_path / "in.jsonl"
    write_jsonl(data, [synthetic.make_row([3, 5, 1]), synthetic.make_row([9, 9])])
    out = tmp_path / "o" / "scc.jsonl"
    from s1.curate import cli as curate_cli    # `s1 curate variants ...` dispatches to variants.main
    rc = curate_cli.main(["variants", "--data", str(data), "--method", "scc", "--tokenizer", digit_tokenizer,
                          "--out", str(out), "--step-tokens", "3", "--no-progress"])
    assert rc == 0
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert rows[0]["question"] == "a3 b5 c1\nAdd the digits modulo ten.\n\nThink for up to 3 steps."
    assert rows[0]["thinking_trajectories"] == ["[3 steps left]\na3=3\n[2 steps left]\nb5=8\n[1 steps left]\nc1=9"]
    assert rows[1]["question"] == "a9 b9\nAdd the digits modulo ten.\n\nThink for up to 2 steps."
    assert rows[1]["thinking_trajectories"] == ["[2 steps left]\na9=9\n[1 steps left]\nb9=8"]
    assert [r["thinking_budget"] for r in rows] == [3, 2] and rows[0]["attempt"] == "Final Answer: 9"
    stats = json.loads((tmp_path / "o" / "scc.jsonl.stats.json").read_text())
    assert stats["rows"] == 2 and stats["mean_steps"] == 2.5
    # the plain traces are 9 + 1 and 6 + 1 tokens (3 per item plus the closing newline)
    assert stats["mean_trace_tokens_before"] == pytest.approx((10 + 7) / 2)
    capsys.readouterr()
    assert variants.main(["--data", str(tmp_path / "nope.jsonl"), "--method", "tcc", "--tokenizer", digit_tokenizer,
                          "--out", str(tmp_path / "x.jsonl")]) == 2
    assert "s1 curate variants:" in capsys.readouterr().err

