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
