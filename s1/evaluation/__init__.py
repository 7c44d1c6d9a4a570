"""Evaluation: benchmark tasks, offline grading, test-time-scaling metrics, the methods of the s1
paper, budget sweeps through the engine, reports and plots.

    tasks    benchmark questions (AIME, MATH-500, AMC23, GPQA Diamond) as TaskItem lists
    grader   answer extraction and equivalence, offline
    metrics  Control, Scaling, Performance, majority voting
    methods  prompt and trace renderings of the conditional-control methods
    sweep    sweep points, METHODS, engine requests, run_eval (records written as they finish)
    report   scoring, summaries, markdown, run files, rescore
    plots    the scaling curve
    cli      `s1 eval` / `python -m s1.evaluation`

grader, metrics, tasks, methods, sweep and report are pure Python (no torch); the engine is
imported only when a sweep runs one (cli, or the caller passing an `LLM`).
"""
