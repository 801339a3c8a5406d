"""chrF, SQuAD exact match / token F1, accuracy / macro-F1 and the reward summaries, on fixed inputs.

Each metric is compared with its reference: sacrebleu and scikit-learn called directly, and
numbers worked out by hand from the official SQuAD v1.1 evaluation script's definitions.
"""

from __future__ import annotations

import math

import pytest
import sacrebleu
from helpers import MULTI_REFS, PREDICTIONS, SINGLE_REFS
from sacrebleu.metrics import CHRF
from sklearn.metrics import accuracy_score, f1_score

from lmtune.evaluate.metrics import (
    CHRF_SETTINGS,
    accuracy,
    chrf,
    exact_match,
    is_label_like,
    macro_f1,
    normalize_answer,
    token_f1,
)
from lmtune.evaluate.reward import compare_rewards, reward_summary

# --------------------------------------------------------------------------- chrF


@pytest.mark.parametrize("refs", [SINGLE_REFS, MULTI_REFS], ids=["single", "multi"])
def test_chrf_equals_sacrebleu(refs):
    width = max(map(len, refs))
    streams = [[r[k] if k < len(r) else None for r in refs] for k in range(width)]
    ours = chrf(PREDICTIONS, refs)
    assert set(ours) == {"chrf"}
    assert ours["chrf"] == pytest.approx(sacrebleu.corpus_chrf(PREDICTIONS, streams).score / 100, abs=1e-12)
    # the settings written into metrics.json are the ones used
    named = CHRF(
        char_order=CHRF_SETTINGS["char_order"], word_order=CHRF_SETTINGS["word_order"], beta=CHRF_SETTINGS["beta"]
    )
    assert ours["chrf"] == pytest.approx(named.corpus_score(PREDICTIONS, streams).score / 100, abs=1e-12)
    assert 0 < ours["chrf"] < 1


def test_chrf_extremes_and_more_references():
    assert chrf(["Rain in Oslo."], [["Rain in Oslo."]])["chrf"] == pytest.approx(1.0)
    assert chrf(["xyz"], [["abc"]])["chrf"] == 0.0
    assert chrf(PREDICTIONS, MULTI_REFS)["chrf"] > chrf(PREDICTIONS, SINGLE_REFS)["chrf"]


# --------------------------------------------------------------------------- SQuAD exact match / token F1


def test_squad_normalisation():
    # lower -> drop punctuation -> drop articles -> collapse whitespace, in the v1.1 script's order
    assert normalize_answer("The  Denver Broncos!") == "denver broncos"
    assert normalize_answer("an apple, a pear and THE plum.") == "apple pear and plum"
    assert normalize_answer("brown-fox") == "brownfox"  # punctuation is removed, not turned into a space
    assert normalize_answer("theory of a thesis") == "theory of thesis"  # articles only as whole words
    assert normalize_answer("  ") == ""


def test_exact_match_worked_examples():
    assert exact_match(["the Denver Broncos"], [["Denver Broncos"]]) == 1.0
    assert exact_match(["Denver Broncos."], [["denver broncos"]]) == 1.0
    assert exact_match(["Denver"], [["Denver Broncos"]]) == 0.0
    assert exact_match(["theory"], [["ory"]]) == 0.0
    assert exact_match([""], [["Denver Broncos"]]) == 0.0
    # the best reference counts (SQuAD dev, Super Bowl 50: "Where did Super Bowl 50 take place?")
    refs = ["Levi's Stadium", "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California.", "Santa Clara"]
    assert exact_match(["Santa Clara"], [refs]) == 1.0
    # the mean over examples
    assert exact_match(["the Denver Broncos", "Denver", "Carolina"], [["Denver Broncos"]] * 3) == pytest.approx(1 / 3)


def test_token_f1_worked_examples():
    # "denver" vs "denver broncos": precision 1/1, recall 1/2 -> 2 * 1 * 0.5 / 1.5
    assert token_f1(["Denver"], [["Denver Broncos"]]) == pytest.approx(2 * 1 * 0.5 / 1.5)
    assert token_f1(["Denver"], [["Denver Broncos"]]) == pytest.approx(0.6667, abs=1e-4)
    assert token_f1(["the Denver Broncos"], [["Denver Broncos"]]) == 1.0
    assert token_f1(["Carolina Panthers"], [["Denver Broncos"]]) == 0.0  # no overlap
    assert token_f1([""], [["Denver Broncos"]]) == 0.0
    # 5 predicted tokens, all in the 11-token reference: P = 1, R = 5/11, F1 = 10/16
    long_ref = "Levi's Stadium in the San Francisco Bay Area at Santa Clara, California."
    assert token_f1(["Levi's Stadium in Santa Clara"], [[long_ref]]) == pytest.approx(10 / 16)
    # the best reference per example: the exact one wins
    assert token_f1(["Levi's Stadium in Santa Clara"], [[long_ref, "Levi's Stadium in Santa Clara"]]) == 1.0
    # repeated tokens count with multiplicity (Counter intersection): P = 1/2, R = 1/1
    assert token_f1(["Denver Denver"], [["Denver"]]) == pytest.approx(2 * 0.5 * 1 / 1.5)
    # the mean over examples
    got = token_f1(["the Denver Broncos", "Denver", "Carolina"], [["Denver Broncos"]] * 3)
    assert got == pytest.approx((1 + 2 / 3 + 0) / 3)


# --------------------------------------------------------------------------- labels

LABEL_PREDS = ["Positive", " negative", "neutral", "positive ", "I think it is positive", "NEGATIVE", "neutral"]
LABEL_REFS = [["positive"], ["negative"], ["positive"], ["positive"], ["neutral"], ["negative", "neg"], ["neutral"]]


def test_accuracy_and_macro_f1_equal_scikit_learn():
    # normalised by hand: strip + casefold; the first reference
    y_true = ["positive", "negative", "positive", "positive", "neutral", "negative", "neutral"]
    y_pred = ["positive", "negative", "neutral", "positive", "i think it is positive", "negative", "neutral"]
    assert accuracy(LABEL_PREDS, LABEL_REFS) == pytest.approx(accuracy_score(y_true, y_pred)) == pytest.approx(5 / 7)
    classes = sorted(set(y_true))
    expected = f1_score(y_true, y_pred, labels=classes, average="macro", zero_division=0)
    assert macro_f1(LABEL_PREDS, LABEL_REFS) == pytest.approx(expected)
    # by hand: positive P=2/2 R=2/3 F1=0.8; negative 1.0; neutral P=1/2 R=1/2 F1=0.5
    assert macro_f1(LABEL_PREDS, LABEL_REFS) == pytest.approx((0.8 + 1.0 + 0.5) / 3)
    # free text is not a class of its own: with it, a fourth F1 of 0 would pull the mean down
    with_free_text = f1_score(y_true, y_pred, average="macro", zero_division=0)
    assert with_free_text == pytest.approx((0.8 + 1.0 + 0.5 + 0.0) / 4)


def test_macro_f1_weighs_rare_classes_like_common_ones():
    refs = [["yes"]] * 8 + [["no"]] * 2
    always_yes = ["yes"] * 10
    assert accuracy(always_yes, refs) == pytest.approx(0.8)
    assert macro_f1(always_yes, refs) == pytest.approx((2 * 0.8 / 1.8 + 0.0) / 2)


def test_is_label_like():
    assert is_label_like(LABEL_REFS)
    assert is_label_like([["Yes"], ["yes "], ["No"], ["no"]])  # normalised: 2 classes, 2 each
    assert not is_label_like([["yes"], ["yes"], ["no"]])  # a class seen once
    assert not is_label_like([["yes"], ["yes"]])  # one class
    assert not is_label_like([])
    free_text = [["The forecast says rain in Oslo on Monday."], ["Sunny all week in Lisbon, light winds."]] * 3
    assert not is_label_like(free_text)  # answers longer than 5 words
    many = [[f"class {i}"] for i in range(21)] * 2
    assert not is_label_like(many)  # 21 classes
    assert is_label_like(many[:20] * 2)


# --------------------------------------------------------------------------- reward summaries


def test_reward_summary_on_fixed_scores():
    scores = [float(i) for i in range(1, 11)]
    s = reward_summary(scores)
    assert s["n"] == 10 and s["scores"] == scores
    assert s["mean"] == pytest.approx(5.5)
    assert s["std"] == pytest.approx(math.sqrt(8.25))  # population standard deviation
    assert (s["min"], s["max"]) == (1.0, 10.0)
    # linear interpolation between order statistics: 1 + q * 9
    assert s["quantiles"] == pytest.approx({"p10": 1.9, "p50": 5.5, "p90": 9.1})
    assert reward_summary([2.5]) == {
        "n": 1,
        "mean": 2.5,
        "std": 0.0,
        "min": 2.5,
        "max": 2.5,
        "quantiles": {"p10": 2.5, "p50": 2.5, "p90": 2.5},
        "scores": [2.5],
    }
    assert reward_summary([])["n"] == 0 and reward_summary([])["mean"] is None


def test_compare_rewards_on_fixed_scores():
    got = compare_rewards([1.0, 2.0, 3.0, 4.0], [2.0, 2.0, 1.0, 5.0])
    assert got == {"finetuned_higher": 0.5, "ties": 0.25, "base_higher": 0.25, "pairs": 4}
    assert compare_rewards([0.0], [-1.0]) == {"finetuned_higher": 0.0, "ties": 0.0, "base_higher": 1.0, "pairs": 1}
    assert compare_rewards([], [])["pairs"] == 0
    with pytest.raises(ValueError, match="2 base scores but 1"):
        compare_rewards([1.0, 2.0], [1.0])
