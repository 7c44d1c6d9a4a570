"""The curation report's figure (s1/curate/output.py): MSC codes carry their titles, the legends
do not cover any bar, and the trace-length axis names the tokenizer that counted the tokens."""
from collections import Counter

from s1.curate.output import draw_report, tokenizer_label
from tests.conftest import require_shared_data


def test_report_figure_names_domains_keeps_legends_off_the_bars_and_names_the_tokenizer(tmp_path):
    import matplotlib.pyplot as plt
    titles = {"05": "Combinatorics", "11": "Number theory", "97": "Mathematics education",
              "51": "Geometry", "26": "Real functions"}
    doms = sorted(titles)
    cand = Counter({"05": 40, "11": 30, "97": 20, "51": 9, "26": 1})      # tall bars at the left and right
    sel = Counter({"05": 5, "11": 4, "97": 1})
    lens_c, lens_s = [10, 20, 300, 900, 40] * 10, [900, 300]
    bins = [(0, 250), (250, 500), (500, 750), (750, 1000)]
    qwen = require_shared_data() / "qwen2.5-tokenizer"
    fig, ax = draw_report(doms, cand, sel, 100, 10, lens_c, lens_s, bins, titles, tokenizer_label(qwen))
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    ticks = [t.get_text() for t in ax[0].get_xticklabels()]
    assert ticks == [f"{c} {titles[c]}" for c in doms]
    for a in ax:
        legend = a.get_legend().get_window_extent(r)
        bars = [p.get_window_extent(r) for p in a.patches if p.get_height() > 0]
        assert bars and not any(legend.overlaps(b) for b in bars)
    label = ax[1].get_xlabel()
    assert "qwen2.5-tokenizer" in label and "151,6" in label
    plt.close(fig)
    # a folder of its own (the demo's): named as such, never "Qwen2.5"
    own = tmp_path / "demo" / "tokenizer"
    own.mkdir(parents=True)
    own.joinpath("tokenizer.json").write_text('{"model": {"vocab": {"a": 0, "b": 1}}, "added_tokens": [{"id": 2}]}')
    assert tokenizer_label(own) == "tokenizer demo/tokenizer, 3 tokens"
