"""The scan flow's pure parts: the result cache key, the listing of new images, a batch with a
fake scanner, the metrics and the masked share over time."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from maskcls.config import Settings
from maskcls.errors import ConfigError
from maskcls.names import SCANNER_MODELS
from tasks import scan, tracking
from tasks.scan import Listing, ScannerRef

V1 = ScannerRef(name="face-mask-scanner", version="1")


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings.from_env({"MASKCLS_HOME": str(tmp_path / "home")})


def png(path: Path, value: int = 128) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), np.full((40, 60, 3), value, np.uint8))
    return path


def test_the_key_is_content_scanner_version_and_settings() -> None:
    key = scan.result_key("a" * 64, V1, {"whole_image": False})
    assert key == scan.result_key("a" * 64, ScannerRef(name="face-mask-scanner", version="1"), {"whole_image": False})
    assert len({
        key,
        scan.result_key("b" * 64, V1, {"whole_image": False}),
        scan.result_key("a" * 64, ScannerRef(name="face-mask-scanner", version="2"), {"whole_image": False}),
        scan.result_key("a" * 64, ScannerRef(name="face-mask-scanner-3class", version="1"), {"whole_image": False}),
        scan.result_key("a" * 64, V1, {"whole_image": True}),
    }) == 5


def test_the_scanner_names_are_the_ones_registration_uses() -> None:
    class_sets = {2: ["with_mask", "without_mask"], 3: ["with_mask", "without_mask", "mask_weared_incorrect"]}
    assert all(name == tracking.scanner_model_name(class_sets[n]) for n, name in SCANNER_MODELS.items())


def test_listing_takes_regular_image_files_only(tmp_path: Path) -> None:
    root = tmp_path / "inbox"
    png(root / "b.png")
    png(root / "sub" / "a.png")
    (root / "notes.txt").write_text("not an image")
    png(root / ".hidden.png")
    os.mkfifo(root / "pipe.png")
    (root / "out.png").symlink_to(png(tmp_path / "outside.png"))

    images, skipped = scan.image_entries(root)

    assert [e.rel for e in images] == ["b.png", "sub/a.png"]
    assert {s["input"] for s in skipped} == {"pipe.png", "out.png"}
    assert all(s["reason"] for s in skipped)


def test_an_image_is_new_until_its_result_is_remembered_and_again_for_a_new_version(
        tmp_path: Path, settings: Settings) -> None:
    root = tmp_path / "inbox"
    png(root / "one.png", 10)
    png(root / "copy-of-one.png", 10)
    first = scan.find_new(root, V1, {}, settings)
    assert [p.rel for p in first.new] == ["copy-of-one.png", "one.png"] and first.cached == []
    assert first.new[0].sha256 == first.new[1].sha256  # same bytes, same key

    scan.remember.fn([scan.Scanned(photo=p) for p in first.new], settings)
    png(root / "two.png", 20)
    second = scan.find_new(root, V1, {}, settings)

    assert [p.rel for p in second.new] == ["two.png"]
    assert [p.rel for p in second.cached] == ["copy-of-one.png", "one.png"]
    assert len(scan.find_new(root, V1, {}, settings, rescan=True).new) == 3
    assert len(scan.find_new(root, ScannerRef(name=V1.name, version="2"), {}, settings).new) == 3


def test_a_missing_folder_is_an_error_naming_it_but_the_inbox_is_made(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ConfigError, match="nowhere"):
        scan.find_new(tmp_path / "nowhere", V1, {}, settings)
    assert scan.find_new(settings.inbox, V1, {}, settings) == Listing(new=[], cached=[], skipped=[])
    assert settings.inbox.is_dir()


class FakeScanner:
    """The registered scanner's interface: column `image` of encoded bytes in, `faces` JSON and
    `count_<class>` out; one masked face per image."""

    def __init__(self) -> None:
        self.calls: list[int] = []

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        self.calls.append(len(frame))
        face = {"x": 5, "y": 5, "w": 20, "h": 20, "label": "with_mask", "probability": 0.9, "detector_score": 0.8}
        return pd.DataFrame({"faces": [json.dumps([face])] * len(frame), "count_with_mask": [1] * len(frame),
                             "count_without_mask": [0] * len(frame), "error": [""] * len(frame)})


def test_a_batch_scans_the_good_photos_in_one_call_and_a_bad_one_fails_alone(
        tmp_path: Path, settings: Settings, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "inbox"
    png(root / "a.png")
    png(root / "sub" / "b.png", 200)
    (root / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    fake = FakeScanner()
    monkeypatch.setattr(scan, "_model", lambda settings, scanner: fake)
    photos = scan.find_new(root, V1, {}, settings).new

    results = scan.scan_batch.fn(photos, V1, {"whole_image": False}, settings, tmp_path / "out" / "images", False)

    assert fake.calls == [2]
    by_rel = {r.photo.rel: r for r in results}
    assert by_rel["broken.png"].failed and by_rel["broken.png"].faces == []
    assert by_rel["a.png"].faces[0]["label"] == "with_mask" and by_rel["a.png"].classes == ["with_mask", "without_mask"]
    assert (tmp_path / "out" / "images" / "sub" / "b.png").is_file()
    assert by_rel["sub/b.png"].annotated == "sub/b.png"

    listing = Listing(new=photos, cached=[], skipped=[{"input": "pipe.png", "reason": "a named pipe (FIFO)"}])
    summary = scan.summarise.fn(results, listing, tmp_path / "out")
    assert (summary["faces"], summary["count_with_mask"], summary["count_without_mask"]) == (2, 2, 0)
    assert [f["input"] for f in summary["failed"]] == ["broken.png", "pipe.png"]
    assert json.loads((tmp_path / "out" / "summary.json").read_text()) == summary
    assert (tmp_path / "out" / "scan.csv").read_text().count("with_mask") == 2
    metrics = scan.scan_metrics(summary, listing)
    assert metrics["faces_with_mask"] == 2 and metrics["faces_without_mask"] == 0
    assert metrics["masked_share"] == 1.0 and 0 < metrics["masked_share_low"] < 1
    assert (metrics["images_scanned"], metrics["images_cached"], metrics["images_failed"]) == (3, 0, 2)


def test_no_faces_logs_no_share() -> None:
    summary = scan.ScanResult().summary(["with_mask"])
    metrics = scan.scan_metrics(summary, Listing(new=[], cached=[], skipped=[]))
    assert metrics == {"faces": 0, "faces_with_mask": 0, "images_scanned": 0, "images_cached": 0, "images_failed": 0}


def test_share_over_time_keeps_runs_with_faces_oldest_first(tmp_path: Path) -> None:
    runs = [
        {"run_id": "c", "start_time": 3_000, "masked_share": 0.5, "masked_share_low": 0.2, "masked_share_high": 0.8},
        {"run_id": "b", "start_time": 2_000, "faces": 0.0},
        {"run_id": "a", "start_time": 1_000, "masked_share": 1.0, "masked_share_low": 0.6, "masked_share_high": 1.0},
    ]
    points = scan.share_over_time(runs)
    assert points == [(datetime.fromtimestamp(1, tz=UTC), 1.0, 0.6, 1.0),
                      (datetime.fromtimestamp(3, tz=UTC), 0.5, 0.2, 0.8)]
    scan.plot_share_over_time(points, tmp_path / "over.png")
    scan.plot_share_over_time([], tmp_path / "empty.png")
    assert cv2.imread(str(tmp_path / "over.png")) is not None and cv2.imread(str(tmp_path / "empty.png")) is not None
