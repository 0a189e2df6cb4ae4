"""What an embedding blurs but an answer depends on: numbers and negation.

all-MiniLM-L6-v2 scores "Call me at 555-1234" / "Call me at 555-9876" at
0.96 and "sort a list with recursion" / "... without recursion" at 0.98,
above any useful threshold.  So the numbers a prompt carries (in order)
and how many negations it has must match exactly: they join the partition
(with the text the model reads as unknown).  A paraphrase keeps both ("do
not" and "don't" count the same)."""

from __future__ import annotations

import re

_NUMBER = re.compile(r"\d+(?:[.,:/-]\d+)*")
_NEGATION = re.compile(
    r"\b(?:not|no|never|none|nor|neither|nothing|nobody|nowhere|without|cannot|except|excluding)\b|n't\b",
    re.IGNORECASE,
)


def guard(text: str) -> str:
    numbers = _NUMBER.findall(text)
    negations = len(_NEGATION.findall(text.replace("\u2019", "'")))
    if not numbers and not negations:
        return ""
    return f"n={','.join(numbers)};neg={negations}"
