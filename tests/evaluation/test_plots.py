"""The scaling plot (s1/evaluation/plots.py) is readable."""
import pytest

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

def _summary(points):
    return {"task": "fake", "num_questions": 4, "methods": sorted({p["method"] for p in points}),
            "points": [dict(p, name=f"p{i}") for i, p in enumerate(points)]}


def test_all_zero_accuracies_get_a_readable_axis_and_coincident_points_stay_visible():
    """Every accuracy 0: the axis runs from 0 to 10 (not -0.04..0.04, no negative tick). Budget 16
    and 16 + one unused "Wait" sit at the same compute and accuracy: both markers are drawn,
    side by side, and the caption says why."""
    from s1.evaluation.plots import accuracy_limits, draw_scaling
    pts = [dict(method="budget_forcing", compute=c, accuracy=0.0, max_thinking_tokens=b, num_wait=w)
           for c, b, w in ((4.0, 4, 0), (8.0, 8, 0), (16.0, 16, 0), (16.0, 16, 1))]
    fig, ax, labels = draw_scaling(_summary(pts))
    lo, hi = ax.get_ylim()
    assert -0.5 < lo <= 0 and hi >= 10
    assert all(v >= 0 for v in ax.get_yticks() if lo <= v <= hi)          # no negative tick is drawn
    # the two points at (16, 0): two marker artists whose pixel positions differ by >= 5 px
    xs = []
    for line in ax.get_lines():
        if line.get_linestyle() == "None" and list(line.get_xdata()) == [16.0]:
            xs.append(line.get_transform().transform((16.0, 0.0))[0])
    assert len(xs) == 2 and abs(xs[0] - xs[1]) >= 5, xs
    assert "side by side" in " ".join(t.get_text() for t in fig.texts)
    assert len(labels) == 4
    assert accuracy_limits([100.0, 100.0])[1] <= 102.5 and accuracy_limits([100.0])[0] >= 89
    assert accuracy_limits([20.0, 60.0]) == pytest.approx((16.0 - 0.96, 64.0 + 0.96))
