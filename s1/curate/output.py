"""Output stage: the s1K-schema dataset and the curation report (markdown + PNG)."""
from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from s1.common.jsonl import write_jsonl

S1K_COLUMNS = ("question", "solution", "cot_type", "source_type", "metadata", "cot", "thinking_trajectories", "attempt")


def to_s1k_row(r: dict) -> dict:
    """s1K columns (metadata as a JSON string, cot None, thinking_trajectories a list of one
    string, as in simplescaling/s1K) plus id, answer, domain, trace_tokens for bookkeeping."""
    return {
        "question": r["question"],
        "solution": r.get("solution") or r.get("answer") or "",   # s1K's AIME rows carry the answer only
        "cot_type": r.get("cot_type") or "math",
        "source_type": r["source_type"],
        "metadata": json.dumps(r.get("metadata") or {}, ensure_ascii=False, default=str),
        "cot": None,
        "thinking_trajectories": [r.get("thinking") or ""],
        "attempt": r.get("attempt") or "",
        "id": r["id"],
        "answer": r.get("answer") or "",
        "domain": r.get("domain") or "",
        "trace_tokens": int(r.get("trace_tokens") or 0),
    }


def write_dataset(records: list[dict], out_dir, progress: bool = False) -> dict:
    """<out>/dataset (datasets.save_to_disk), <out>/s1k.parquet, <out>/s1k.jsonl."""
    import datasets
    from tqdm import tqdm

    out_dir = Path(out_dir)
    rows = [to_s1k_row(r) for r in tqdm(records, desc="output (rows)", unit="q", disable=not progress)]
    features = datasets.Features({
        "question": datasets.Value("string"), "solution": datasets.Value("string"),
        "cot_type": datasets.Value("string"), "source_type": datasets.Value("string"),
        "metadata": datasets.Value("string"), "cot": datasets.Value("string"),
        "thinking_trajectories": datasets.Sequence(datasets.Value("string")),
        "attempt": datasets.Value("string"), "id": datasets.Value("string"), "answer": datasets.Value("string"),
        "domain": datasets.Value("string"), "trace_tokens": datasets.Value("int64"),
    })
    ds = datasets.Dataset.from_list(rows, features=features)
    ds.save_to_disk(str(out_dir / "dataset"))
    ds.to_parquet(str(out_dir / "s1k.parquet"))
    write_jsonl(out_dir / "s1k.jsonl", rows)
    return {"rows": len(rows), "paths": ["dataset", "s1k.parquet", "s1k.jsonl"]}


def _table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(x) for x in row) + " |" for row in rows]
    return "\n".join(lines)


def _length_bins(values: list[int], nbins: int = 10) -> list[tuple[int, int]]:
    hi = max(values, default=0) + 1
    step = max(1, -(-hi // nbins))
    return [(i * step, (i + 1) * step) for i in range(nbins)]


def tokenizer_label(tokenizer_dir) -> str:
    """How the report names the tokenizer that counted trace tokens: its folder (the last two path
    parts) and vocabulary size, e.g. "data/qwen2.5-tokenizer, 151,665 tokens" or the demo's own
    "demo/tokenizer, 2,000 tokens"."""
    if not tokenizer_dir:
        return "tokenizer not recorded"
    p = Path(tokenizer_dir)
    name = "/".join(p.parts[-2:])
    try:
        with open(p / "tokenizer.json", encoding="utf-8") as f:
            tj = json.load(f)
        ids = set(tj["model"]["vocab"].values()) | {t["id"] for t in tj.get("added_tokens", [])}
        return f"tokenizer {name}, {len(ids):,} tokens"
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return f"tokenizer {name}"


def _short(title: str, n: int = 30) -> str:
    return title if len(title) <= n else title[:n - 1].rstrip() + "…"


def domain_tick_labels(codes: list[str], titles: dict[str, str]) -> list[str]:
    """x tick labels of the domain histogram: "code title" (titles cut to 30 characters)."""
    return [f"{c} {_short(titles[c])}" if titles.get(c) else c for c in codes]


def write_report(out_dir, stats: dict[str, dict], candidates: list[dict], selected: list[dict], titles: dict[str, str],
                 tokenizer: str | None = None) -> None:
    """report.md + report.png: counts per stage and source, domain and trace-length histograms.
    tokenizer: the folder of the tokenizer that counted trace tokens (named in both)."""
    out_dir = Path(out_dir)
    tok_name = tokenizer_label(tokenizer)
    s = {k: v.get("stats", {}) for k, v in stats.items()}
    sources = sorted(s["sources"]["per_source"])
    sel_by_src = Counter(r["source_type"] for r in selected)
    stage_cols = [("loaded", lambda src: s["sources"]["per_source"][src]["kept"]),
                  ("after decontam+dedup", lambda src: s["decontam"]["per_source"].get(src, {}).get("kept", 0)),
                  ("with traces" + (" (model subset)" if s["traces"].get("subset", 0) < s["traces"].get("in", 0) else ""),
                   lambda src: s["traces"]["per_source"].get(src, 0)),
                  ("after quality", lambda src: s["quality"]["per_source"].get(src, {}).get("kept", 0)),
                  ("after difficulty", lambda src: s["difficulty"]["per_source"].get(src, {}).get("kept", 0)),
                  ("selected", lambda src: sel_by_src.get(src, 0))]
    rows = [[src] + [f(src) for _, f in stage_cols] for src in sources]
    rows.append(["**total**"] + [sum(r[i + 1] for r in rows) for i in range(len(stage_cols))])
    md = [f"# Curation report ({out_dir.name})", "",
          f"Selector `{s['select']['method']}`, size {s['select']['size']}, seed {s['select']['seed']}; "
          f"{len(selected)} questions selected from {len(candidates)} candidates.", "",
          "## Counts per stage and source", "", _table(["source"] + [c for c, _ in stage_cols], rows), ""]
    md += ["## Sources", "", _table(["source", "rows", "kept", "filtered (e.g. AIME year > max)", "malformed"],
                                      [[k, v["rows"], v["kept"], v["filtered"], v["malformed"]] for k, v in sorted(s["sources"]["per_source"].items())])]
    errs = s["sources"]["errors"]
    if errs:
        md += ["", f"Malformed rows ({len(errs)}; first 20):", ""] + [f"- {e['source']}: {e['path']}:{e['line']}: {e['reason']}" for e in errs[:20]]
    d = s["decontam"]
    md += ["", "## Decontamination (word 8-grams) and exact dedup", "",
           _table(["source", "in", "contaminated", "duplicate", "kept"], [[k, v["in"], v["contaminated"], v["duplicate"], v["kept"]] for k, v in sorted(d["per_source"].items())]),
           "", _table(["evaluation set", "questions", "questions sharing an 8-gram with the pool"], [[k, v["questions"], v["matched"]] for k, v in sorted(d["eval_sets"].items())])]
    t = s["traces"]
    c = t["counts"]
    md += ["", "## Traces", "", f"Imported {c['imported']}, teacher {c['teacher']} (errored {c['errored']}), missing {c['missing']}; "
           f"teacher settings {t['teacher_params']}. Model stages ran on "
           + (f"{t['subset']} of {t['in']} questions (a seeded subset, --max-questions)." if t["subset"] < t["in"] else f"all {t['in']} questions.")]
    q = s["quality"]
    md += ["", "## Quality filter (a question can break several rules)", "",
           _table(["source", "in", *q["rules"].keys()], [[k, v["in"], *[v[r] for r in q["rules"]]] for k, v in sorted(q["per_source"].items())])]
    df = s["difficulty"]
    md += ["", "## Difficulty", "",
           ("No student checkpoints given: every question kept." if df["skipped"] else
            f"Students {df['students']}; correct answers per student {df['correct_per_student']}; "
            "a question is kept only if every student is wrong.")
           + f" Thinking-trace tokens ({tok_name}) over the stage input: {df['trace_tokens']}.", "",
           _table(["source", "in", "solved by a student", "kept"], [[k, v["in"], v["solved_by_a_student"], v["kept"]] for k, v in sorted(df["per_source"].items())])]
    if df.get("recipe") == "s1":
        sel = s["select"]
        md += ["", f"s1 recipe: students in plain chat {df['student_params']}, each attempt and the teacher's judged "
               f"against the full solution with s1's grading prompt; missing verdicts (a dropped row each) "
               f"{df['no_verdict']}; teacher graded by {df['teacher_graded_by']}.", "",
               f"Preselected {sel.get('preselected')} {sel.get('preselected_kinds')}; then {sel.get('draws')} draws: "
               f"{sel.get('draws_phase1')} with uniform domains, {sel.get('draws_phase2')} from the AIME/GPQA domain "
               f"histogram {sel.get('benchmark_histogram')}; {sel.get('draws_of_already_chosen')} drew a preselected question."]
    dm = s["domains"]
    agr = dm["agreement_with_pool_labels"]
    md += ["", "## Domains (MSC)", "", f"methods: {dm['methods']}; {dm['domains_used']} domains used by the candidates.", "",
           "Agreement with the pool's own labels mapped to MSC (s1/curate/domains.py tables; strict = primary code, lenient = any listed code):", "",
           _table(["source", "labeled", "strict", "lenient"], [[k, v["labeled"], v["strict_rate"], v["lenient_rate"]] for k, v in sorted(agr["per_source"].items())]
                  + [["**total**", agr["total"]["labeled"], agr["total"]["strict_rate"], agr["total"]["lenient_rate"]]])]
    from s1.curate.domains import MATH_TYPE, OLYMPIADBENCH_SUBFIELD, OMNI_DOMAIN

    md += ["", "<details><summary>Pool label → MSC mapping used for the agreement (first code = strict)</summary>", "",
           _table(["pool field", "label", "MSC codes"],
                  [["MATH type", k, ", ".join(v)] for k, v in MATH_TYPE.items()]
                  + [["OlympiadBench subfield", k, ", ".join(v)] for k, v in OLYMPIADBENCH_SUBFIELD.items()]
                  + [["Omni-MATH domain", k, ", ".join(v)] for k, v in OMNI_DOMAIN.items()]), "", "</details>"]
    if "keyword_agreement_with_pool_labels" in dm:
        md += ["", f"keyword classifier alone on the same questions: {dm['keyword_agreement_with_pool_labels']}"]
    cand_dom, sel_dom = Counter(r["domain"] for r in candidates), Counter(r["domain"] for r in selected)
    doms = sorted(set(cand_dom) | set(sel_dom))
    md += ["", "### Domain histogram", "", _table(["code", "title", "candidates", "selected"],
                                                   [[c, titles.get(c, ""), cand_dom[c], sel_dom[c]] for c in doms])]
    lens_c = [r.get("trace_tokens") or 0 for r in candidates]
    lens_s = [r.get("trace_tokens") or 0 for r in selected]
    bins = _length_bins(lens_c)
    md += ["", f"### Trace length histogram (thinking tokens, {tok_name})", "", _table(
        ["tokens", "candidates", "selected"],
        [[f"[{a}, {b})", sum(a <= x < b for x in lens_c), sum(a <= x < b for x in lens_s)] for a, b in bins])]
    if lens_s:
        md += ["", f"mean trace tokens: candidates {sum(lens_c) / max(len(lens_c), 1):.1f}, selected {sum(lens_s) / len(lens_s):.1f}"]
    md += ["", "![report](report.png)", ""]
    (out_dir / "report.md").write_text("\n".join(md), encoding="utf-8")
    fig, _ = draw_report(doms, cand_dom, sel_dom, len(candidates), len(selected), lens_c, lens_s, bins, titles, tok_name)
    fig.savefig(out_dir / "report.png", dpi=110)
    import matplotlib.pyplot as plt
    plt.close(fig)


def draw_report(doms, cand_dom, sel_dom, n_cand: int, n_sel: int, lens_c, lens_s, bins, titles, tok_name: str):
    """The report figure -> (figure, [domain axes, length axes]). Domain ticks carry the MSC titles;
    both legends sit above their axes, clear of the bars."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(1, 2, figsize=(15, 6.5), gridspec_kw={"width_ratios": [3, 2]})
    x = range(len(doms))
    cn = [cand_dom[c] / max(n_cand, 1) for c in doms]
    sn = [sel_dom[c] / max(n_sel, 1) for c in doms]
    ax[0].bar([i - 0.2 for i in x], cn, width=0.4, label=f"candidates (n={n_cand})")
    ax[0].bar([i + 0.2 for i in x], sn, width=0.4, label=f"selected (n={n_sel})")
    ax[0].set_xticks(list(x), domain_tick_labels(list(doms), titles), rotation=90, fontsize=7)
    ax[0].set_xlabel("MSC domain (code and title)")
    ax[0].set_ylabel("fraction")
    ax[0].set_title("domain histogram", pad=24)
    ax[0].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    edges = [a for a, _ in bins] + [bins[-1][1]]
    ax[1].hist([lens_c, lens_s], bins=edges, density=True, label=["candidates", "selected"])
    ax[1].set_xlabel(f"thinking tokens ({tok_name})")
    ax[1].set_ylabel("density (log scale)")
    ax[1].set_yscale("log")
    ax[1].set_title("trace length histogram", pad=24)
    ax[1].legend(loc="lower center", bbox_to_anchor=(0.5, 1.0), ncol=2, fontsize=8, frameon=False)
    fig.tight_layout()
    return fig, ax
