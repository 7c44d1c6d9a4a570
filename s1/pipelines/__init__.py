"""Whole-loop pipelines on top of every stage: the toy reasoning task, "train a tiny model and
sweep its thinking budget", and `s1 demo`. Nothing below this package imports it."""
