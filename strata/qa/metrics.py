"""Reference metrics (exact match, SQuAD token F1, ROUGE-L, BLEU) and perplexity from prompt logprobs."""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from typing import Iterable, Sequence

# Higher is better for these; lower is better for the latency and perplexity columns.
QUALITY = ("exact_match", "f1", "rouge_l", "bleu")
LOWER_IS_BETTER = frozenset({"ttft_s", "latency_s", "perplexity"})

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize(text: str) -> str:
    """SQuAD normalisation: lower case, drop punctuation and articles, collapse whitespace."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def exact_match(prediction: str, reference: str) -> float:
    """1.0 when the normalised strings are equal, else 0.0."""
    return float(normalize(prediction) == normalize(reference))


def token_f1(prediction: str, reference: str) -> float:
    """SQuAD token F1 over normalised whitespace tokens (both empty counts as a match)."""
    pred, ref = normalize(prediction).split(), normalize(reference).split()
    if not pred or not ref:
        return float(pred == ref)
    common = sum((Counter(pred) & Counter(ref)).values())
    if common == 0:
        return 0.0
    precision, recall = common / len(pred), common / len(ref)
    return 2 * precision * recall / (precision + recall)


def rouge_l(prediction: str, reference: str) -> float:
    """ROUGE-L F-measure from Google's rouge-score (its tokenizer, Porter stemming on)."""
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    return float(scorer.score(reference, prediction)["rougeL"].fmeasure)


def drift(output: str, base_output: str) -> float:
    """How far an answer moved from the base's answer to the same prompt: 0 when identical, else 1 - ROUGE-L
    (so a base compared with itself is 0 even when its words are ones ROUGE's tokenizer drops)."""
    return 0.0 if output == base_output else 1.0 - rouge_l(output, base_output)


def bleu(prediction: str, reference: str) -> float:
    """Sentence BLEU from sacrebleu, on sacrebleu's usual 0-100 scale (13a tokenizer, exp smoothing)."""
    import sacrebleu

    return float(sacrebleu.sentence_bleu(prediction, [reference]).score)


def reference_metrics(prediction: str, reference: str) -> dict[str, float]:
    """Every reference metric for one output, keyed by the names in QUALITY."""
    return {
        "exact_match": exact_match(prediction, reference),
        "f1": token_f1(prediction, reference),
        "rouge_l": rouge_l(prediction, reference),
        "bleu": bleu(prediction, reference),
    }


def perplexity(logprobs: Iterable[Sequence[float | None]]) -> float:
    """exp(-mean log-probability) pooled over every scored token of every text; None entries (the first
    token of a text has no context) are skipped."""
    values = [lp for text in logprobs for lp in text if lp is not None]
    if not values:
        raise ValueError("no token log-probabilities to score; the texts were empty")
    return math.exp(-sum(values) / len(values))


def mean(values: Iterable[float | None]) -> float | None:
    """Mean of the non-None values, or None when there are none."""
    kept = [v for v in values if v is not None]
    return sum(kept) / len(kept) if kept else None


def best_index(values: Sequence[float | None], metric: str) -> int | None:
    """Index of the best value for `metric` (direction from LOWER_IS_BETTER); None when all are missing or equal."""
    scored = [(v, i) for i, v in enumerate(values) if v is not None and not math.isnan(v)]
    if not scored or (len(scored) > 1 and len({v for v, _ in scored}) == 1):
        return None  # nothing to compare, or a tie across the board: no winner to mark
    return (min(scored) if metric in LOWER_IS_BETTER else max(scored, key=lambda p: (p[0], -p[1])))[1]
