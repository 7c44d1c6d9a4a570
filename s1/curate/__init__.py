"""s1/curate/: the s1K selection pipeline (s1 paper §2).

Stages, in order (each one reads the previous stage's records from disk, see pipeline.py):

    sources -> decontam (8-gram decontamination + exact dedup) -> traces (teacher or import)
    -> quality -> difficulty (students + trace length) -> domains (MSC) -> select -> output

A record is a plain dict: id, question, solution, answer, cot_type, source_type, metadata
(+ fields added by later stages: thinking, attempt, trace_error, trace_tokens, students,
domain, domain_method). `id` is a hash of the normalized question text (text.question_id).

Two recipes (Config.recipe / `--recipe`): "project" (quality.py heuristics, thinking-format students
graded on the answer, select.py) and "s1", curation as s1's own data/ code ran it (s1rules.py:
quality regexes, preselection, two-phase sampler; difficulty.difficulty_filter_s1 with plain-chat
students judged against the full solution through grading.py).
"""
