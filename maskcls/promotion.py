"""The promotion rule: does a newly trained model replace the champion?

Both models are scored on the same test images, the ones neither of them trained or
validated on; the candidate must beat the champion by at least ``min_delta``. This module
only decides: the registry side (``tasks.promotion``) scores the models, applies the
decision under the promotion lock and tags the version with its outcome and reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

PROMOTED = "promoted"
NOT_BETTER = "not_better"
ERROR = "error"
#: A run whose model is never registered (the article protocol, a held-out origin family).
SKIPPED = "skipped"


@dataclass(frozen=True)
class Scores:
    """Accuracy of the candidate and of the champion on the same ``n_images`` unseen test images."""

    candidate: float
    champion: float
    n_images: int
    champion_version: str


@dataclass(frozen=True)
class Decision:
    """Whether to move the champion alias, the outcome tag (`promoted|not_better|error`) and why."""

    promote: bool
    outcome: str
    reason: str


def unseen_test_images(paths: Sequence[str], sha256: Sequence[str], labels: Sequence[str],
                       seen: set[str]) -> list[tuple[str, str]]:
    """(path, label) of the candidate's test images whose content the champion never trained or validated on."""
    return [(p, label) for p, s, label in zip(paths, sha256, labels) if s not in seen]


def accuracy(predicted: Sequence[str], labels: Sequence[str]) -> float:
    """Share of ``predicted`` equal to ``labels`` (NaN without labels: no score is not a score of 0)."""
    if not labels:
        return float("nan")
    return sum(p == t for p, t in zip(predicted, labels)) / len(labels)


def failed(reason: str) -> Decision:
    """The outcome when the models could not be compared: the version stays, the champion does not move."""
    return Decision(promote=False, outcome=ERROR, reason=reason)


def decide(scores: Scores | None, min_delta: float) -> Decision:
    """Promote when there is no champion (``scores`` is None) or the candidate wins by ``min_delta``.

    A NaN score never wins: a comparison with NaN is false.
    """
    if scores is None:
        return Decision(promote=True, outcome=PROMOTED, reason="no champion yet")
    if scores.n_images == 0:
        return failed("no test image is unseen by both models")
    detail = (f"on {scores.n_images} test images unseen by both: candidate {scores.candidate:.4f}, "
              f"champion v{scores.champion_version} {scores.champion:.4f}, min delta {min_delta}")
    if scores.candidate - scores.champion >= min_delta:
        return Decision(promote=True, outcome=PROMOTED, reason="better " + detail)
    return Decision(promote=False, outcome=NOT_BETTER, reason="not better " + detail)


def registration_skipped(protocol: str, holdout_family: str | None) -> str | None:
    """Why a run's model must not become a version at all (None: it may be registered).

    A model is compared with the champion on the shared leak-free test side; these runs
    score on another test side, so their figures answer another question.
    """
    if protocol == "article":
        return ("data.protocol=article reproduces the 2020 article's leaky split (exact duplicates and "
                "variants of training images on the test and validation sides): its model is never registered")
    if holdout_family is not None:
        return (f"data.holdout_family={holdout_family} trains without that origin family and tests on it "
                "alone: its model is never registered")
    return None
