"""Evaluation: benchmark tasks, offline grading, test-time-scaling metrics, the methods of the s1
paper, budget sweeps through the engine, reports and plots.

`evaluation.grader`, `evaluation.metrics`, `evaluation.tasks` and `evaluation.methods` are pure
Python (no torch); the sweep imports the engine only when it runs one.
"""
