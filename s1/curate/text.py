"""Text normalization shared by every stage: ids, word n-grams, boxed answers."""
from __future__ import annotations

import hashlib
import re

_WS = re.compile(r"\s+")


def normalize(text: str) -> str:
    """Lowercase and collapse every whitespace run to one space (s1 §2.1 decontamination)."""
    return _WS.sub(" ", text.lower()).strip()


def question_id(question: str) -> str:
    """Stable id of a question: 16 hex digits of sha1(normalized text)."""
    return hashlib.sha1(normalize(question).encode("utf-8")).hexdigest()[:16]


def word_ngrams(text: str, n: int = 8) -> set[str]:
    """Word n-grams of the normalized text, each joined by one space.

    A text shorter than n words yields its whole word sequence as a single gram, so a short
    evaluation question still matches an identical short pool question.
    """
    words = normalize(text).split(" ")
    if len(words) < n:
        return {" ".join(words)} if words and words[0] else set()
    return {" ".join(words[i:i + n]) for i in range(len(words) - n + 1)}


def last_boxed(text: str) -> str | None:
    """Content of the last \\boxed{...} (or \\fbox{...}) in text, braces balanced; None if absent."""
    start = max(text.rfind("\\boxed"), text.rfind("\\fbox"))
    if start < 0:
        return None
    i = text.find("{", start)
    if i < 0:
        return None
    depth = 0
    for j in range(i, len(text)):
        if text[j] == "{":
            depth += 1
        elif text[j] == "}":
            depth -= 1
            if depth == 0:
                return text[i + 1:j]
    return None
