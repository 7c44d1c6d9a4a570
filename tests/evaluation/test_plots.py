"""The scaling plot (s1/evaluation/plots.py) is readable."""
from s1.evaluation import sweep
from s1.evaluation.tasks import TaskItem
from s1.infer.sampling import SamplingParams
from tests.evaluation.helpers import FakeLLM


def test_scaling_plot_is_readable(tmp_path):
    """Budget 0 is not drawn at x = 2^0: the axis is linear from 0 to the smallest positive value
    (0 sits left of it); no two point labels overlap; the caption says what the small numbers are;
    the x label names only what is plotted."""
    from s1.evaluation.plots import draw_scaling

    items = [TaskItem(str(i), f"q{i}", str(10 + i), "integer") for i in range(4)]
    llm = FakeLLM({"q0": 1, "q1": 2, "q2": 3, "q3": 4}, {f"q{i}": str(10 + i) for i in range(4)})
    points = sweep.make_points(["budget_forcing"], [0, 1, 2, 3, 4, 6, 8], [0])
    summ = sweep.run_eval(llm, items, points, task="fake", model="fake", sampling_params_cls=SamplingParams,
                          out_dir=str(tmp_path))
    assert summ["points"][0]["compute"] == 0.0
    fig, ax, labels = draw_scaling(summ)
    assert ax.get_xscale() == "symlog"
    x0 = ax.transData.transform((0.0, 0.0))[0]
    x1 = ax.transData.transform((1.0, 0.0))[0]
    assert x0 < x1 - 10   # 0 is drawn left of 1, not on top of it
    assert "majority" not in ax.get_xlabel() and "rs" not in ax.get_xlabel()
    assert "thinking tokens" in ax.get_xlabel()
    r = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(r) for t in labels]
    assert len(boxes) == 7
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    caption = " ".join(t.get_text() for t in fig.texts)
    assert "cap on thinking tokens" in caption
    assert (tmp_path / "scaling.png").stat().st_size > 0


def test_clipped_budgets_are_ringed_and_labelled():
    """A point whose budget is more than the context holds gets a red ring, a "*" label and a caption
    line; the others do not."""
    from matplotlib.colors import to_rgba

    from s1.evaluation.plots import draw_scaling

    def row(cap, x, acc, **kw):
        return {"method": "budget_forcing", "max_thinking_tokens": cap, "num_wait": 0, "compute": x,
                "accuracy": acc, "name": f"bf/{cap}", **kw}
    summ = {"task": "t", "num_questions": 2, "methods": {"budget_forcing": {}},
            "points": [row(500, 480.0, 10.0), row(8000, 3700.0, 30.0, clipped_runs=2, context_thinking_limit=3780)]}
    fig, ax, labels = draw_scaling(summ)
    assert sorted(t.get_text() for t in labels) == ["500", "8000*"]
    (ring,) = ax.collections
    assert [tuple(p) for p in ring.get_offsets()] == [(3700.0, 30.0)]
    assert tuple(ring.get_edgecolor()[0]) == to_rgba("red")
    assert "more than the context holds" in " ".join(t.get_text() for t in fig.texts)
