"""Stage orchestration: every stage reads the previous stage's records from <out>/stages/, writes
its own records + stats atomically, and is skipped on a rerun when its fingerprint (its settings
plus the fingerprint of its input) is unchanged. Model stages cache per question id under
<out>/cache/, so an interrupted stage restarted later yields exactly the uninterrupted output.
"""
from __future__ import annotations

import functools
import json
import os
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from s1.common.jsonl import read_jsonl, write_jsonl
from s1.common.paths import shared_data_dir
from s1.curate.store import fingerprint

STAGES = ("sources", "decontam", "traces", "quality", "difficulty", "domains", "select", "output")
SHARED = shared_data_dir()
SOLUTION_TRACES = "pool-solutions"   # == s1.curate.traces.SOLUTION_TRACES (the --traces value of a model-free run)
TRACES_NEEDED = (
    "the traces stage needs reasoning traces, and the pool has none. Give one of:\n"
    "  --teacher CKPT            generate them through our engine (a checkpoint folder or a cached Hugging Face "
    "Hub id, e.g. Qwen/Qwen2.5-32B-Instruct; a GPU for real models)\n"
    "  --traces FILE             import them: JSONL/JSON/parquet/save_to_disk folder/hf:NAME with question, "
    "thinking_trajectories (or deepseek_thinking_trajectory) and attempt columns\n"
    f"  --traces {SOLUTION_TRACES}   a model-free run: each question's reference solution stands in for its trace")


@dataclass
class Config:
    out: str
    pool: list[str] = field(default_factory=list)
    eval_sets: list[str] = field(default_factory=lambda: [str(SHARED / "eval")])
    ngram: int = 8
    aime_max_year: int | None = 2022
    teacher: str | None = None
    traces: list[str] = field(default_factory=list)            # files/datasets with s1K columns
    teacher_params: dict = field(default_factory=dict)         # SamplingParams kwargs (budget forcing)
    max_questions: int | None = None                           # model stages on a seeded subset
    students: list[str] = field(default_factory=list)
    student_params: dict = field(default_factory=dict)
    domain_model: str | None = None
    msc: str = str(SHARED / "curation" / "msc.json")
    tokenizer: str = str(SHARED / "qwen2.5-tokenizer")
    size: int = 1000
    seed: int = 0                                              # selection seed
    gen_seed: int = 0                                          # model sampling seeds + model-stage subset
    selector: str = "s1"
    recipe: str = "project"                                    # "s1": s1's own rules (s1.curate.s1rules)
    judge: str | None = None                                   # s1 recipe: grader checkpoint (our engine)
    judge_url: str | None = None                               # ... or an OpenAI-compatible endpoint
    judge_model: str | None = None                             # the endpoint's model name
    judge_max_tokens: int = 8192                               # grader reply cap (s1: Claude, 8192)
    preselected: str | None = None                             # file: one id or JSONL {"id"|"question"} per line
    device: str = "cpu"
    batch_size: int = 64
    progress: bool = True

    def stage_settings(self, stage: str) -> dict:
        a = asdict(self)
        keys = {"sources": ["pool", "aime_max_year"], "decontam": ["eval_sets", "ngram"],
                "traces": ["teacher", "traces", "teacher_params", "max_questions", "gen_seed"], "quality": ["recipe"],
                "difficulty": ["students", "student_params", "gen_seed", "tokenizer", "recipe"]
                + (["judge", "judge_url", "judge_model", "judge_max_tokens"] if self.recipe == "s1" else []),
                "domains": ["domain_model", "msc"], "select": ["size", "seed", "selector", "preselected", "recipe"],
                "output": []}[stage]
        s = {k: a[k] for k in keys}
        for k in ("pool", "eval_sets", "traces", "students"):   # paths by absolute location
            if k in s:
                s[k] = [x if x.startswith("hf:") or x == SOLUTION_TRACES else os.path.abspath(x) for x in s[k]]
        for k in ("teacher", "domain_model", "preselected", "msc", "tokenizer", "judge"):
            if s.get(k) and not s[k].startswith("hf:"):
                s[k] = os.path.abspath(s[k])
        return s


RECIPES = ("project", "s1")
STUDENT_THINKING_KEYS = ("max_thinking_tokens", "min_thinking_tokens", "num_wait", "max_answer_tokens")


def s1_student_params(params: dict) -> dict:
    """s1's plain-chat student sampling (temperature 0.05, up to 32,768 tokens), overridden by
    --student-temperature / --student-max-tokens; thinking settings have no meaning in plain chat."""
    from s1.curate.s1rules import STUDENT_MAX_TOKENS, STUDENT_TEMPERATURE

    bad = [k for k in STUDENT_THINKING_KEYS if params.get(k) is not None]
    if bad:
        raise ValueError(f"--recipe s1 runs the students in plain chat (no thinking phase): "
                         f"{', '.join('--student-' + k.replace('_', '-') for k in bad)} do not apply")
    return {"temperature": params.get("temperature", STUDENT_TEMPERATURE),
            "max_tokens": params.get("max_tokens", STUDENT_MAX_TOKENS)}


def usage_errors(cfg: "Config", stages=STAGES) -> list[str]:
    """Problems with the settings themselves, found before any stage runs (the CLI exits 2).
    `stages`: the stages about to run (the pool and traces files are checked only when the
    sources / traces stage will read them)."""
    errs = []
    if cfg.size < 1:
        errs.append(f"--size must be at least 1, got {cfg.size}")
    if cfg.recipe not in RECIPES:
        errs.append(f"--recipe must be one of {', '.join(RECIPES)}, got {cfg.recipe!r}")
    for spec in cfg.pool if "sources" in stages else []:
        if not spec.startswith("hf:") and not os.path.exists(spec):
            errs.append(f"pool source {spec} does not exist")
    for spec in cfg.traces if "traces" in stages else []:
        if spec != SOLUTION_TRACES and not spec.startswith("hf:") and not os.path.exists(spec):
            errs.append(f"traces file {spec} does not exist")
    if cfg.judge and cfg.judge_url:
        errs.append("give --judge (a local checkpoint) or --judge-url (an endpoint), not both")
    if cfg.recipe == "s1":
        if cfg.students and not (cfg.judge or cfg.judge_url):
            errs.append("--recipe s1 grades the students' attempts against the full solution with a judge: "
                        "give --judge CKPT or --judge-url URL [--judge-model NAME]")
        try:
            s1_student_params(cfg.student_params)
        except ValueError as e:
            errs.append(str(e))
    else:
        if cfg.judge or cfg.judge_url:
            errs.append("--judge / --judge-url grade the difficulty stage of --recipe s1 only")
    if cfg.recipe == "s1" and cfg.selector != "s1":
        errs.append(f"--recipe s1 selects with s1's own two-phase sampler; --selector {cfg.selector} belongs to "
                    "the project recipe")
    return errs


def default_llm_factory(path: str, device: str):
    from s1.infer import LLM

    return LLM(path, device=device)


def model_key(path: str) -> str:
    """Cache key of a checkpoint: folder name + hash of its absolute path."""
    p = os.path.abspath(path)
    return f"{Path(p).name}-{fingerprint(p)[:8]}"


class Pipeline:
    def __init__(self, cfg: Config, llm_factory=default_llm_factory, log=None):
        self.cfg = cfg
        self.out = Path(cfg.out)
        self.llm_factory = llm_factory
        self.log = log or (lambda msg: print(msg, file=sys.stderr))

    # -------------------------------------------------------------- stage files
    def records_path(self, stage):
        return self.out / "stages" / f"{STAGES.index(stage) + 1:02d}_{stage}.jsonl"

    def stats_path(self, stage):
        return self.out / "stages" / f"{STAGES.index(stage) + 1:02d}_{stage}.json"

    def fingerprint(self, stage: str) -> str:
        prev = self.fingerprint(STAGES[STAGES.index(stage) - 1]) if stage != "sources" else ""
        return fingerprint([stage, self.cfg.stage_settings(stage), prev])

    def is_done(self, stage: str) -> bool:
        p = self.stats_path(stage)
        if not p.exists() or not self.records_path(stage).exists():
            return False
        stats = json.loads(p.read_text())
        if stats["fingerprint"] != self.fingerprint(stage):
            return False
        # the output stage is done only while the files it wrote are still there
        files = stats["stats"].get("paths", []) + stats["stats"].get("report", []) if stage == "output" else []
        return all((self.out / f).exists() for f in files)

    def load(self, stage: str) -> list[dict]:
        if not self.is_done(stage):
            raise RuntimeError(f"stage {stage!r} has no up-to-date output in {self.out / 'stages'}: "
                               f"run `s1 curate {stage} --out {self.out} ...` (or the whole pipeline) first")
        return read_jsonl(self.records_path(stage), tolerate_truncated_tail=False)

    def stats(self, stage: str) -> dict:
        return json.loads(self.stats_path(stage).read_text())

    def _save(self, stage: str, records: list[dict], stats: dict, seconds: float) -> None:
        write_jsonl(self.records_path(stage), records)
        tmp = self.stats_path(stage).with_suffix(".json.tmp")
        tmp.write_text(json.dumps({"stage": stage, "fingerprint": self.fingerprint(stage), "seconds": round(seconds, 3),
                                   "count": len(records), "settings": self.cfg.stage_settings(stage), "stats": stats},
                                  indent=1, default=str))
        os.replace(tmp, self.stats_path(stage))   # stats last: its presence marks the stage done

    # -------------------------------------------------------------- running
    def check_checkpoints(self, stages) -> None:
        """Fail before any work (not after sources and decontamination) when a model that the
        given stages would load is not a checkpoint directory."""
        models = {"traces": [self.cfg.teacher],
                  "difficulty": list(self.cfg.students) + ([self.cfg.judge] if self.cfg.recipe == "s1" else []),
                  "domains": [self.cfg.domain_model]}
        for stage in stages:
            for path in models.get(stage, []):
                if not path:
                    continue
                if not os.path.isdir(path):
                    raise FileNotFoundError(f"checkpoint directory {path!r} does not exist")
                if not os.path.isfile(os.path.join(path, "config.json")):
                    raise FileNotFoundError(f"no config.json in {path!r}: not an HF-format checkpoint")

    def run(self, stages=STAGES, force: bool = False) -> dict:
        """Run the given stages in order (skipping up-to-date ones unless force); returns {stage: seconds}."""
        if self.llm_factory is default_llm_factory:
            self.check_checkpoints([s for s in stages if force or not self.is_done(s)])
        times = {}
        for stage in stages:
            if not force and self.is_done(stage):
                self.log(f"[curate] {stage}: up to date ({self.stats(stage)['count']} records), skipped")
                continue
            t0 = time.perf_counter()
            inp = self.load(STAGES[STAGES.index(stage) - 1]) if stage != "sources" else None
            if inp is not None and not inp:   # an earlier run left nothing (its stats say why)
                raise ValueError(self.nothing_left(STAGES[STAGES.index(stage) - 1], None))
            records, stats = getattr(self, f"stage_{stage}")(inp)
            times[stage] = time.perf_counter() - t0
            self._save(stage, records, stats, times[stage])
            self.log(f"[curate] {stage}: {len(records)} records in {times[stage]:.1f}s")
            if not records:
                raise ValueError(self.nothing_left(stage, 0 if inp is None else len(inp)))
        return times

    def nothing_left(self, stage: str, n_in: int | None) -> str:
        """The message when a stage leaves no question (instead of a failure further down)."""
        where = self.stats_path(stage)
        if stage == "sources":
            return f"the pool ({' '.join(self.cfg.pool)}) has no readable question; malformed rows: see {where}"
        why = {"decontam": "every question overlaps an evaluation set or repeats another",
               "traces": "no question got a trace",
               "quality": "every trace failed the quality rules",
               "difficulty": "every question was solved by a student" + (
                   ", or lacks a judge verdict (a reply whose last line is not Yes/No)" if self.cfg.recipe == "s1" else ""),
               "domains": "no question got a domain",
               "select": "the selection chose nothing"}.get(stage, "")
        counts = "0 out" if n_in is None else f"{n_in} in, 0 out"
        return (f"no question survives the {stage} stage ({counts}: {why}); the stage's counts "
                f"are in {where}, so no dataset was written")

    def stage_sources(self, _):
        from s1.curate.sources import load_sources

        if not self.cfg.pool:
            raise ValueError("no pool given (--pool DIR|FILE|hf:NAME ...)")
        records, stats = load_sources(self.cfg.pool, self.cfg.aime_max_year, self.cfg.progress)
        for e in stats["errors"][:20]:
            self.log(f"[curate] malformed row: {e['source']}: {e['path']}:{e['line']}: {e['reason']}")
        if len(stats["errors"]) > 20:
            self.log(f"[curate] ... {len(stats['errors']) - 20} more malformed rows (see {self.stats_path('sources')})")
        return records, stats

    def stage_decontam(self, records):
        from s1.curate.decontam import decontaminate, load_eval_questions

        kept, stats, _ = decontaminate(records, load_eval_questions(self.cfg.eval_sets), self.cfg.ngram, self.cfg.progress)
        return kept, stats

    def stage_traces(self, records):
        import numpy as np
        from s1.curate.traces import add_traces, load_trace_file

        n_in = len(records)
        if self.cfg.max_questions is not None and self.cfg.max_questions < n_in:
            # seeded subset, original order kept: model stages on CPU are slow (documented in the report)
            idx = np.sort(np.random.default_rng(self.cfg.gen_seed).choice(n_in, self.cfg.max_questions, replace=False))
            records = [records[i] for i in idx]
        imported = {}
        for spec in self.cfg.traces:
            if spec == SOLUTION_TRACES:
                from s1.curate.traces import solution_traces
                imported.update(solution_traces(records))
            else:
                imported.update(load_trace_file(spec))
        if not self.cfg.teacher and not imported:
            if self.cfg.traces:
                raise ValueError(f"--traces {' '.join(self.cfg.traces)}: no traces in it; " + TRACES_NEEDED.split(". ", 1)[1])
            raise ValueError(TRACES_NEEDED)
        need_teacher = self.cfg.teacher and any(r["id"] not in imported for r in records)
        llm = functools.partial(self.llm_factory, self.cfg.teacher, self.cfg.device) if need_teacher else None
        # one cache per (teacher, sampling settings): changed settings never reuse stale traces
        key = f"{model_key(self.cfg.teacher)}-{fingerprint([self.cfg.teacher_params, self.cfg.gen_seed])[:8]}" if self.cfg.teacher else ""
        cache = self.out / "cache" / f"traces_{key}.jsonl" if self.cfg.teacher else None
        out, counts = add_traces(records, imported, llm, self.cfg.teacher_params, self.cfg.gen_seed, cache,
                                 self.cfg.batch_size, self.cfg.progress)
        per_source = {}
        for r in out:
            per_source[r["source_type"]] = per_source.get(r["source_type"], 0) + 1
        return out, {"in": n_in, "subset": len(out), "counts": counts, "per_source": per_source,
                     "teacher_params": self.cfg.teacher_params}

    def stage_quality(self, records):
        if self.cfg.recipe == "s1":
            from s1.curate.s1rules import quality_filter as s1_quality_filter
            return s1_quality_filter(records, progress=self.cfg.progress)
        from s1.curate.quality import quality_filter

        return quality_filter(records, has_traces=True, progress=self.cfg.progress)

    def make_grader(self):
        """The s1 recipe's grader (None without --judge / --judge-url); replies cached in the run folder."""
        from s1.curate.grading import make_grader

        llm = None
        if self.cfg.judge and self.llm_factory is not default_llm_factory:
            llm = self.llm_factory(self.cfg.judge, self.cfg.device)
        return make_grader(self.cfg.judge, self.cfg.judge_url, self.cfg.judge_model,
                           cache=self.out / "cache" / "grader.jsonl", device=self.cfg.device,
                           max_tokens=self.cfg.judge_max_tokens, llm=llm)

    def stage_difficulty(self, records):
        if self.cfg.recipe == "s1":
            from s1.curate.difficulty import difficulty_filter_s1

            params = s1_student_params(self.cfg.student_params)
            settings = fingerprint(["plain", params, self.cfg.gen_seed])[:8]
            students = [(f"{model_key(p)}-{settings}", functools.partial(self.llm_factory, p, self.cfg.device))
                        for p in self.cfg.students]
            return difficulty_filter_s1(records, students, params, self.cfg.gen_seed, self.out / "cache",
                                        self.cfg.tokenizer, self.make_grader(), self.cfg.batch_size, self.cfg.progress)
        from s1.curate.difficulty import difficulty_filter

        settings = fingerprint([self.cfg.student_params, self.cfg.gen_seed])[:8]
        # loaded lazily: a student whose attempts are all cached is never loaded
        students = [(f"{model_key(p)}-{settings}", functools.partial(self.llm_factory, p, self.cfg.device))
                    for p in self.cfg.students]
        return difficulty_filter(records, students, self.cfg.student_params, self.cfg.gen_seed, self.out / "cache",
                                 self.cfg.tokenizer, self.cfg.batch_size, self.cfg.progress)

    def stage_domains(self, records):
        from s1.curate.domains import classify, load_msc

        llm = self.llm_factory(self.cfg.domain_model, self.cfg.device) if self.cfg.domain_model else None
        cache = self.out / "cache" / f"domains_{model_key(self.cfg.domain_model)}.jsonl" if llm else None
        return classify(records, load_msc(self.cfg.msc), llm, cache, self.cfg.batch_size, progress=self.cfg.progress)

    def preselected_ids(self, candidates: list[dict]) -> list[str]:
        if not self.cfg.preselected:
            return []
        from s1.curate.text import question_id

        ids = []
        for line in Path(self.cfg.preselected).read_text(encoding="utf-8").splitlines():
            line = line.strip()
            if not line:
                continue
            if line.startswith("{"):
                row = json.loads(line)
                ids.append(row["id"] if "id" in row else question_id(row["question"]))
            else:
                ids.append(line)
        known = {r["id"] for r in candidates}
        dropped = [i for i in ids if i not in known]
        if dropped:
            self.log(f"[curate] {len(dropped)} pre-selected items are not candidates after filtering; ignored")
        return [i for i in ids if i in known]

    def stage_select(self, records):
        if self.cfg.recipe == "s1":
            return self.select_s1(records)
        from s1.curate.select import select

        pre = self.preselected_ids(records)
        chosen = select(records, self.cfg.size, self.cfg.seed, self.cfg.selector, pre)
        if len(chosen) < self.cfg.size:
            self.log(f"[curate] only {len(chosen)} candidates left, fewer than --size {self.cfg.size}")
        return chosen, {"method": self.cfg.selector, "size": self.cfg.size, "seed": self.cfg.seed,
                        "preselected": len(pre), "selected": len(chosen), "candidates": len(records)}

    def select_s1(self, records):
        from collections import Counter

        from s1.curate import s1rules

        rule = [r["id"] for r in records if s1rules.preselected(r)]
        pre = list(dict.fromkeys(rule + self.preselected_ids(records)))
        if len(pre) > self.cfg.size:
            self.log(f"[curate] {len(pre)} questions are preselected, more than --size {self.cfg.size}: "
                     f"the first {self.cfg.size} (candidate order) are kept")
            pre = pre[:self.cfg.size]
        draws = []
        chosen = s1rules.sample(records, self.cfg.size, self.cfg.seed, pre, trace=draws)
        if len(chosen) < self.cfg.size:
            self.log(f"[curate] only {len(chosen)} chosen, fewer than --size {self.cfg.size} (the domains "
                     "ran dry, or phase 2's AIME/GPQA histogram has no domain left)")
        pre_kinds = Counter("aime" if s1rules.is_aime(r["source_type"]) else "gpqa" if s1rules.is_gpqa(r["source_type"])
                            else "math" if s1rules.is_math(r["source_type"]) else "other"
                            for r in chosen[:len(pre)])
        return chosen, {"method": "s1 (two-phase)", "recipe": "s1", "size": self.cfg.size, "seed": self.cfg.seed,
                        "preselected": len(pre), "preselected_by_rule": len(rule), "preselected_kinds": dict(pre_kinds),
                        "benchmark_histogram": s1rules.benchmark_histogram(records),
                        "phase_switch": s1rules.PHASE_SWITCH, "draws": len(draws),
                        "draws_phase1": sum(1 for n, *_ in draws if n < s1rules.PHASE_SWITCH),
                        "draws_phase2": sum(1 for n, *_ in draws if n >= s1rules.PHASE_SWITCH),
                        "draws_of_already_chosen": sum(1 for *_, new in draws if not new),
                        "selected": len(chosen), "candidates": len(records)}

    def stage_output(self, selected):
        from s1.curate.domains import load_msc
        from s1.curate.output import write_dataset, write_report

        info = write_dataset(selected, self.out, self.cfg.progress)
        titles = {m["code"]: m["title"] for m in load_msc(self.cfg.msc)}
        write_report(self.out, {s: self.stats(s) for s in STAGES[:-1]}, self.load("domains"), selected, titles,
                     tokenizer=self.cfg.tokenizer)
        return selected, {**info, "report": ["report.md", "report.png"]}
