"""tasks.promotion: the scanning model follows the classifier champion (registry calls faked)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from maskcls.errors import TrackingError
from tasks import promotion, tracking

CLASSES = ["with_mask", "without_mask"]
LOG = logging.getLogger("test")


@pytest.fixture
def registry(monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    """A fake registry: the classifier champion, what the scanner champion wraps, registrations made."""
    state = SimpleNamespace(champion="3", wraps=None, registered=[], fail=None, asked=[])
    def champion(client, name: str = "face-mask-classifier"):
        state.asked.append(name)
        return None if state.champion is None else SimpleNamespace(version=state.champion)

    monkeypatch.setattr(tracking, "champion", champion)
    monkeypatch.setattr(tracking, "scanner_wraps", lambda client, name: state.wraps)

    def register(client, run_id: str, version: str, classes: list[str], classifier: str) -> str:
        if state.fail:
            raise state.fail
        state.registered.append((run_id, version, tracking.scanner_model_name(classes), classifier))
        return "7"

    monkeypatch.setattr(tracking, "register_scanner", register)
    return state


def test_a_champion_the_scanner_does_not_bundle_gets_a_new_scanner_version(registry: SimpleNamespace) -> None:
    assert promotion._sync_scanner(None, "run", CLASSES, LOG) == {"scanner_version": "7"}
    assert registry.registered == [("run", "3", "face-mask-scanner", "face-mask-classifier")]


def test_a_three_class_champion_gets_the_three_class_scanner(registry: SimpleNamespace) -> None:
    classes = ["mask_weared_incorrect", "with_mask", "without_mask"]
    assert promotion._sync_scanner(None, "run", classes, LOG) == {"scanner_version": "7"}
    # the 3-class classifier's champion is asked for, never the 2-class one
    assert registry.asked == ["face-mask-classifier-3class"]
    assert registry.registered == [("run", "3", "face-mask-scanner-3class", "face-mask-classifier-3class")]


def test_nothing_is_registered_when_the_scanner_already_bundles_the_champion_or_there_is_none(
        registry: SimpleNamespace) -> None:
    registry.wraps = "3"
    assert promotion._sync_scanner(None, "run", CLASSES, LOG) == {}
    registry.champion = None
    assert promotion._sync_scanner(None, "run", CLASSES, LOG) == {}
    assert registry.registered == []


def test_a_failed_scanner_registration_leaves_the_promotion_and_says_why(
        registry: SimpleNamespace, caplog: pytest.LogCaptureFixture) -> None:
    registry.fail = TrackingError("MLflow (http://x) refused a request: boom")
    assert promotion._sync_scanner(None, "run", CLASSES, LOG) == {
        "scanner_error": "TrackingError: MLflow (http://x) refused a request: boom"}
    assert "could not register face-mask-scanner for face-mask-classifier version 3" in caplog.text
