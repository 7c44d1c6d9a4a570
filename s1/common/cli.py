"""Shared pieces of the command-line interfaces (pure Python, no torch).

`HelpFormatter`: keeps the description's line breaks and appends "(default: X)" to every flag
whose help does not already say its default (flags defaulting to None/False say nothing: their
help explains what absence means). Every parser of every `s1` command uses it.
"""
from __future__ import annotations

import argparse


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    def _get_help_string(self, action):
        h = action.help or ""
        d = action.default
        if (not action.option_strings or "%(default)" in h or "default:" in h or "default " in h
                or d is None or d is False or d is argparse.SUPPRESS):
            return h
        if isinstance(d, str) and (not d or not d.isprintable() or d != d.strip()):
            return h + " (default: %(default)r)"
        if isinstance(d, (list, tuple)):
            return h + " (default: " + " ".join(map(str, d)).replace("%", "%%") + ")"
        return h + " (default: %(default)s)"
