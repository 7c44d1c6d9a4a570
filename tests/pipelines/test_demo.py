"""`s1 demo` (s1/pipelines/demo.py): bad arguments, and a reduced end-to-end run (pool -> curate ->
train from scratch -> budget-forcing sweep) whose accuracy must rise with the thinking budget (the
synthetic task itself: tests/pipelines/test_toy.py)."""
import json

import pytest


def test_demo_rejects_bad_arguments(tmp_path, capsys):
    from s1.pipelines.demo import main
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--max-digits", "20"])
    assert "--max-digits" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path), "--steps", "0"])


# ----------------------------------------------------------------------------- end to end
def test_demo_quick_run_accuracy_rises_with_thinking_budget(tmp_path):
    """Fixed seed, the quick run exactly as the README gives it (--quick: 500 training steps; the
    suite's longest test). Budgets span 0 .. beyond the longest trace. Accuracy at the largest budget
    must beat accuracy without thinking by a wide margin, and the curve must rise overall (last point
    above the middle point). The trace is learned by step ~250 and the answer (five tokens after
    the last running sum) last: 400 steps stayed at ~18% (the cosine had decayed), 500 give
    12.5% -> 100% (bench/NOTES.md, "Demo in three minutes")."""
    from s1.pipelines.demo import main
    out = tmp_path / "demo"
    assert main(["--out", str(out), "--quick", "--seed", "0", "--no-progress"]) == 0
    summary = json.loads((out / "eval" / "summary.json").read_text())
    pts = summary["points"]
    budgets = [p["max_thinking_tokens"] for p in pts]
    acc = [p["accuracy"] for p in pts]
    assert budgets[0] == 0 and budgets[-1] >= 3 * 8 + 1   # quick: up to 8 digits, 3 tokens each + "\n"
    assert pts[0]["mean_thinking_tokens"] == 0
    assert acc[-1] >= acc[0] + 40, f"accuracy does not rise with the budget: {list(zip(budgets, acc))}"
    assert acc[-1] >= 80, f"full traces should be mostly right: {list(zip(budgets, acc))}"
    assert acc[-1] > acc[len(acc) // 2] > acc[0], list(zip(budgets, acc))
    # budget forcing keeps every run within its cap
    assert summary["methods"]["budget_forcing"]["control"] == 1.0
    assert (out / "eval" / "scaling.png").stat().st_size > 1000
    demo = json.loads((out / "demo_summary.json").read_text())
    assert [s["stage"].split(":")[0] for s in demo["stages"]] == ["pool", "tokenizer", "curate", "train", "eval"]
    # the curate stage really selected from the pool (decontaminated, deduplicated, s1-selected)
    counts = demo["stages"][2]["counts"]
    assert counts["sources"] == demo["settings"]["pool_size"]
    assert counts["decontam"] < counts["sources"] and counts["select"] == demo["settings"]["select_size"]
    assert counts["select"] < counts["decontam"]          # a real selection, not everything
    # evaluated on the lengths the selection covers, and the eval set file says so
    cur = demo["stages"][2]
    assert cur["eval_questions"] == summary["num_questions"] == len(open(out / "eval_set" / "test.jsonl").readlines())
    assert cur["selected_by_num_digits"][cur["eval_min_digits"] - 1] > 0
