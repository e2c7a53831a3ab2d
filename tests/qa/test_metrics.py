"""Reference metrics and perplexity on examples worked out by hand."""

from __future__ import annotations

import math

import pytest

from strata.qa import metrics as m


def test_normalisation_drops_case_punctuation_and_articles():
    assert m.normalize("  The Lessee, records  a LIABILITY! ") == "lessee records liability"


def test_exact_match_after_squad_normalisation():
    assert m.exact_match("The lease liability.", "lease liability") == 1.0
    assert m.exact_match("lease asset", "lease liability") == 0.0


def test_token_f1_by_hand():
    # pred -> [lessee, records, liability]; ref -> [lessee, recognizes, lease, liability]; 2 shared
    # P = 2/3, R = 2/4, F1 = 2PR/(P+R) = 4/7
    assert m.token_f1("The lessee records a liability.", "the lessee recognizes a lease liability") == pytest.approx(4 / 7)
    assert m.token_f1("goodwill", "lease") == 0.0
    assert m.token_f1("", "") == 1.0 and m.token_f1("", "lease") == 0.0
    # repeated tokens count only as often as they appear in both: pred [lease, lease], ref [lease] -> P 1/2, R 1
    assert m.token_f1("lease lease", "lease") == pytest.approx(2 / 3)


def test_rouge_l_by_hand():
    # LCS of "the cat sat on the mat" / "the cat sat on a mat" is "the cat sat on mat" = 5 of 6 tokens each side
    assert m.rouge_l("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(5 / 6)
    assert m.rouge_l("lease", "goodwill") == 0.0


def test_bleu_by_hand():
    # clipped n-gram precisions 5/6, 3/5, 2/4, 1/3; equal lengths so no brevity penalty:
    # BLEU = 100 * (5/6 * 3/5 * 1/2 * 1/3) ** (1/4) = 100 * (1/12) ** 0.25
    assert m.bleu("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(100 * (1 / 12) ** 0.25, abs=1e-6)
    assert m.bleu("a lease is a contract", "a lease is a contract") == pytest.approx(100.0)


def test_reference_metrics_has_every_quality_key():
    scores = m.reference_metrics("the cat sat on the mat", "the cat sat on a mat")
    assert set(scores) == set(m.QUALITY)
    assert scores["exact_match"] == 1.0  # articles are dropped before comparing


def test_perplexity_pools_tokens_and_skips_the_unscored_first():
    # mean log-probability of [-1, -2, -3] and [-2] is -2 -> exp(2)
    assert m.perplexity([[None, -1.0, -2.0, -3.0], [None, -2.0]]) == pytest.approx(math.exp(2.0))
    with pytest.raises(ValueError, match="no token"):
        m.perplexity([[None]])


def test_best_index_respects_direction():
    assert m.best_index([0.2, None, 0.5, 0.5], "f1") == 2
    assert m.best_index([3.0, 2.0, None], "perplexity") == 1
    assert m.best_index([None, None], "f1") is None and m.best_index([0.0, 0.0], "f1") is None
    assert m.mean([1.0, None, 3.0]) == 2.0 and m.mean([None]) is None


def test_drift_is_zero_for_the_same_answer_even_without_words():
    # ROUGE's tokenizer keeps only [a-z0-9] runs: a tiny model's "§§ ¶" has no tokens, so ROUGE-L of it with itself
    # is 0 and 1 - ROUGE-L would call the base 100 % drifted from itself
    assert m.rouge_l("§§ ¶", "§§ ¶") == 0.0 and m.drift("§§ ¶", "§§ ¶") == 0.0
    assert m.drift("the lessee records a liability", "the lessee records a liability") == 0.0
    # one word of three differs: LCS 2, P = R = 2/3
    assert m.drift("lessee records liability", "lessee records asset") == pytest.approx(1 - 2 / 3)
    assert m.drift("goodwill", "lease") == 1.0
