"""The promotion rule on its own: no registry, no model, just scores and the min delta."""

from __future__ import annotations

import dataclasses
import math

import pytest

from maskcls.promotion import (
    ERROR,
    NOT_BETTER,
    PROMOTED,
    Decision,
    Scores,
    accuracy,
    decide,
    failed,
    unseen_test_images,
)


def scores(candidate: float, champion: float, n: int = 100) -> Scores:
    return Scores(candidate=candidate, champion=champion, n_images=n, champion_version="3")


def test_the_first_model_becomes_champion() -> None:
    assert decide(None, 0.005) == Decision(promote=True, outcome=PROMOTED, reason="no champion yet")


@pytest.mark.parametrize(("candidate", "champion", "outcome"), [
    (0.96, 0.95, PROMOTED),      # wins by more than the delta
    (0.955, 0.95, PROMOTED),     # wins by exactly the delta
    (0.954, 0.95, NOT_BETTER),   # better, but by less than the delta
    (0.95, 0.95, NOT_BETTER),    # a tie keeps the champion
    (0.90, 0.95, NOT_BETTER),    # worse
])
def test_the_candidate_must_win_by_the_min_delta(candidate: float, champion: float, outcome: str) -> None:
    decision = decide(scores(candidate, champion), 0.005 - 1e-12)
    assert decision.outcome == outcome
    assert decision.promote is (outcome == PROMOTED)


def test_the_reason_names_both_scores_the_images_and_the_champion_version() -> None:
    better = decide(scores(0.97, 0.9, n=42), 0.005)
    assert better.reason == ("better on 42 test images unseen by both: candidate 0.9700, "
                             "champion v3 0.9000, min delta 0.005")
    worse = decide(scores(0.9, 0.97, n=42), 0.005)
    assert worse.reason.startswith("not better on 42 test images unseen by both: candidate 0.9000, champion v3 ")


def test_a_zero_delta_promotes_a_tie_and_a_negative_one_a_slightly_worse_model() -> None:
    assert decide(scores(0.9, 0.9), 0.0).promote
    assert decide(scores(0.89, 0.9), -0.02).promote
    assert not decide(scores(0.85, 0.9), -0.02).promote


def test_no_shared_unseen_image_is_an_error_not_a_promotion() -> None:
    decision = decide(scores(float("nan"), float("nan"), n=0), 0.005)
    assert decision == failed("no test image is unseen by both models")
    assert decision.outcome == ERROR and not decision.promote


def test_a_nan_score_never_wins() -> None:
    assert not decide(scores(float("nan"), 0.5), 0.0).promote
    assert not decide(scores(0.9, float("nan")), 0.0).promote


def test_the_decision_is_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        decide(None, 0.0).promote = False  # type: ignore[misc]


def test_only_images_the_champion_never_saw_are_compared() -> None:
    common = unseen_test_images(["a.jpg", "b.jpg", "c.jpg"], ["s1", "s2", "s3"], ["mask", "none", "mask"],
                                seen={"s2", "other"})
    assert common == [("a.jpg", "mask"), ("c.jpg", "mask")]
    assert unseen_test_images(["a.jpg"], ["s1"], ["mask"], seen={"s1"}) == []


def test_accuracy_is_the_share_of_matching_labels() -> None:
    assert accuracy(["a", "b", "a", "a"], ["a", "b", "b", "a"]) == 0.75
    assert math.isnan(accuracy([], []))
