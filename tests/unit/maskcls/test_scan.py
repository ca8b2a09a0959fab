"""maskcls.scan: inputs, bad inputs, classification of crops, summary, CSV, annotated copies."""

from __future__ import annotations

import csv
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.config import PreprocessConfig
from maskcls.detect import DetectConfig, Face, FaceDetector
from maskcls.inference import Classifier
from maskcls.scan import (
    CSV_COLUMNS,
    ScanConfig,
    Scanner,
    annotated_name,
    list_inputs,
    wilson_interval,
    write_csv,
    write_summary,
)
from maskcls.scenes import Box, Scene, match, score

FACES = Path(__file__).resolve().parents[3].parent / "shared/datasets/face-mask"
BIG, SMALL = "with_mask/0_0_0 copy 10.jpg", "without_mask/0_0_aidai_0014.jpg"


class FakeClassifier:
    """Labels a crop by its size (so the test knows the answer) and records what it was given."""

    def __init__(self) -> None:
        self.calls: list[list[bytes]] = []

    def __call__(self, images: Sequence[bytes]) -> list[tuple[str, float]]:
        self.calls.append(list(images))
        out = []
        for data in images:
            assert data[:8] == b"\x89PNG\r\n\x1a\n"  # crops reach the model losslessly encoded
            crop = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
            out.append(("with_mask", 0.9) if crop.shape[1] > 190 else ("without_mask", 0.8))
        return out


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectConfig(score_threshold=0.6))


def photo(path: Path, faces: list[tuple[str, int, int, int]], size: tuple[int, int] = (640, 480)) -> Path:
    """A grey photo with shared face images (name, x, y, side) pasted on it."""
    img = np.full((size[1], size[0], 3), 128, np.uint8)
    for name, x, y, side in faces:
        img[y:y + side, x:x + side] = cv2.resize(cv2.imread(str(FACES / name)), (side, side))
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), img)
    return path


TWO_BIG_ONE_SMALL = [(BIG, 20, 20, 170), (BIG, 400, 40, 170), (SMALL, 250, 300, 110)]


def png_header(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` (no pixel data): what a decompression bomb looks like."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b""))


def test_wilson_interval() -> None:
    assert wilson_interval(0, 0) == (None, None)
    low, high = wilson_interval(5, 10)
    assert low == pytest.approx(0.2366, abs=1e-4) and high == pytest.approx(0.7634, abs=1e-4)
    low, high = wilson_interval(0, 12)
    assert low == 0.0 and high == pytest.approx(0.2425, abs=1e-4)
    # The same share is far less certain from 12 faces than from 1,200.
    small, large = wilson_interval(9, 12), wilson_interval(900, 1200)
    assert small[1] - small[0] > 5 * (large[1] - large[0])


def test_faces_labelled_counted_and_written(tmp_path: Path, detector: FaceDetector) -> None:
    root = tmp_path / "in"
    photo(root / "crowd.jpg", TWO_BIG_ONE_SMALL)
    photo(root / "sub" / "empty.png", [])
    clf = FakeClassifier()
    result = Scanner(clf, ScanConfig(), detector).scan([root], tmp_path / "out")
    assert result.failed == []
    crowd, empty = sorted(result.images, key=lambda r: r.image)
    assert crowd.image == str(root / "crowd.jpg") and crowd.frame is None and crowd.time_s is None
    assert sorted(f.label for f in crowd.faces) == ["with_mask", "with_mask", "without_mask"]
    assert all(0.6 <= f.detector_score <= 1 for f in crowd.faces)
    assert empty.faces == [] and not empty.whole_image
    assert len(clf.calls) == 1  # both photos' faces went to the model in one batch

    summary = result.summary(["with_mask", "without_mask"])
    assert list(summary) == ["images", "faces", "count_with_mask", "count_without_mask", "masked_share",
                             "masked_share_low", "masked_share_high", "images_without_faces",
                             "whole_image_classified", "failed"]
    assert (summary["images"], summary["faces"], summary["count_with_mask"], summary["count_without_mask"]) == (
        2, 3, 2, 1)
    assert summary["masked_share"] == pytest.approx(2 / 3)
    assert (summary["masked_share_low"], summary["masked_share_high"]) == pytest.approx(wilson_interval(2, 3))
    assert summary["images_without_faces"] == [str(root / "sub" / "empty.png")]

    write_csv(tmp_path / "scan.csv", result)
    rows = list(csv.reader((tmp_path / "scan.csv").open()))
    assert rows[0] == CSV_COLUMNS == ["image", "frame", "time_s", "x", "y", "w", "h", "label", "probability",
                                      "detector_score"]
    assert len(rows) == 4 and {r[0] for r in rows[1:]} == {str(root / "crowd.jpg")}
    assert all(r[1] == "" and r[2] == "" for r in rows[1:])
    # Boxes are in the photo's pixels: each lands on a pasted face.
    for r in rows[1:]:
        x, y, w, h = map(int, r[3:7])
        assert any(fx <= x + w / 2 <= fx + s and fy <= y + h / 2 <= fy + s for _, fx, fy, s in TWO_BIG_ONE_SMALL)
    write_summary(tmp_path / "summary.json", summary)
    assert '"masked_share":' in (tmp_path / "summary.json").read_text()

    assert (tmp_path / "out" / "in" / "crowd.jpg").is_file()
    assert (tmp_path / "out" / "in" / "sub" / "empty.png").is_file()
    drawn = cv2.imread(str(tmp_path / "out" / "in" / "crowd.jpg"))
    f = next(f for f in crowd.faces if f.label == "with_mask")
    assert drawn[f.y + f.h // 2, f.x].tolist() == pytest.approx([60, 180, 60], abs=40)  # green box edge


def test_annotated_copies_never_overwrite_each_other(tmp_path: Path, detector: FaceDetector) -> None:
    a = photo(tmp_path / "a" / "photos" / "x.jpg", [])
    b = photo(tmp_path / "b" / "photos" / "x.jpg", [])
    inputs, failed = list_inputs([tmp_path / "a" / "photos", tmp_path / "b" / "photos", a])
    assert failed == []
    assert [i.rel for i in inputs] == ["photos/x.jpg", "photos/x-2.jpg", "x.jpg"]
    result = Scanner(FakeClassifier(), ScanConfig(), detector).scan([a.parent, b.parent], tmp_path / "out")
    assert sorted(r.annotated for r in result.images) == ["photos/x-2.jpg", "photos/x.jpg"]
    assert annotated_name("clip.gif", None) == "clip.gif.png"
    assert annotated_name("v/clip.mp4", 30) == "v/clip.mp4-frame000030.jpg"


def test_no_images_blur_and_whole_image(tmp_path: Path, detector: FaceDetector) -> None:
    crowd = photo(tmp_path / "crowd.jpg", TWO_BIG_ONE_SMALL)
    close = photo(tmp_path / "close.jpg", [], size=(120, 120))
    Scanner(FakeClassifier(), ScanConfig(), detector).scan([crowd], None)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["close.jpg", "crowd.jpg"]  # --no-images: nothing

    plain = Scanner(FakeClassifier(), ScanConfig(), detector).scan([crowd], tmp_path / "plain")
    Scanner(FakeClassifier(), ScanConfig(blur=True), detector).scan([crowd], tmp_path / "blur")
    f = plain.images[0].faces[0]
    inner = (slice(f.y + f.h // 4, f.y + 3 * f.h // 4), slice(f.x + f.w // 4, f.x + 3 * f.w // 4))
    sharp = cv2.Laplacian(cv2.imread(str(tmp_path / "plain" / "crowd.jpg"))[inner], cv2.CV_64F).var()
    blurred = cv2.Laplacian(cv2.imread(str(tmp_path / "blur" / "crowd.jpg"))[inner], cv2.CV_64F).var()
    assert blurred < sharp / 5

    result = Scanner(FakeClassifier(), ScanConfig(whole_image=True), detector).scan([close], None)
    (r,) = result.images
    assert r.whole_image and [(f.x, f.y, f.w, f.h, f.detector_score) for f in r.faces] == [(0, 0, 120, 120, None)]
    assert result.summary()["whole_image_classified"] == [str(close)]
    write_csv(tmp_path / "scan.csv", result)
    assert (tmp_path / "scan.csv").read_text().splitlines()[1].endswith("without_mask,0.8000,")


def test_video_frames_are_sampled(tmp_path: Path, detector: FaceDetector) -> None:
    frame = cv2.imread(str(photo(tmp_path / "f.png", TWO_BIG_ONE_SMALL)))
    video = tmp_path / "clip.avi"
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (640, 480))
    for _ in range(25):
        writer.write(frame)
    writer.release()
    result = Scanner(FakeClassifier(), ScanConfig(every_s=1.0), detector).scan([video], tmp_path / "out")
    assert [(r.frame, r.time_s) for r in result.images] == [(0, 0.0), (10, 1.0), (20, 2.0)]
    assert all(len(r.faces) == 3 for r in result.images)
    assert (tmp_path / "out" / "clip.avi-frame000010.jpg").is_file()
    write_csv(tmp_path / "scan.csv", result)
    rows = list(csv.reader((tmp_path / "scan.csv").open()))[1:]
    assert {(r[1], r[2]) for r in rows} == {("0", "0.0"), ("10", "1.0"), ("20", "2.0")}


def test_bad_inputs_are_reported_by_name_and_the_batch_goes_on(tmp_path: Path, detector: FaceDetector) -> None:
    root = tmp_path / "in"
    good = photo(root / "good.jpg", TWO_BIG_ONE_SMALL)
    (root / "notes.txt").write_text("not a photo")
    (root / "text.jpg").write_text("this is text, saved as .jpg\n")
    data = good.read_bytes()
    (root / "truncated.jpg").write_bytes(data[: len(data) // 2])
    (root / "zero.png").write_bytes(b"")
    (root / "huge.png").write_bytes(png_header(20_000, 20_000))
    (root / "broken.mp4").write_bytes(b"\0\1\2 not a video" * 100)
    (tmp_path / "empty").mkdir()
    result = Scanner(FakeClassifier(), ScanConfig(), detector).scan(
        [root, tmp_path / "empty", tmp_path / "missing.jpg"], tmp_path / "out")
    reasons = {Path(f.input).name: f.reason for f in result.failed}
    assert sorted(reasons) == ["broken.mp4", "empty", "huge.png", "missing.jpg", "notes.txt", "text.jpg",
                               "truncated.jpg", "zero.png"]
    assert "not an image or video" in reasons["notes.txt"]
    assert reasons["text.jpg"].startswith("text, not an image")
    assert reasons["truncated.jpg"].startswith("truncated JPEG")
    assert reasons["zero.png"] == "empty file"
    assert "decompression bomb" in reasons["huge.png"] or "exceeds the limit" in reasons["huge.png"]
    assert reasons["broken.mp4"].startswith("cannot open the video")
    assert reasons["empty"].startswith("empty folder")
    assert reasons["missing.jpg"] == "no such file or folder"
    (r,) = result.images  # the good photo was still scanned
    assert r.image == str(good) and len(r.faces) == 3
    assert [f["input"] for f in result.summary()["failed"]] == [f.input for f in result.failed]


class GridDetector:
    """Stands in for YuNet: 300 faces on a 20 x 15 grid."""

    def detect(self, image: np.ndarray) -> list[Face]:
        return [Face(x * 32, y * 32, 30, 30, 0.9) for y in range(15) for x in range(20)]


def test_three_hundred_faces_in_one_photo(tmp_path: Path) -> None:
    crowd = photo(tmp_path / "crowd.jpg", [], size=(640, 480))
    clf = FakeClassifier()
    result = Scanner(clf, ScanConfig(), GridDetector()).scan([crowd], tmp_path / "out")  # type: ignore[arg-type]
    assert len(result.images[0].faces) == 300 and sum(map(len, clf.calls)) == 300
    assert result.summary()["count_without_mask"] == 300


def test_scene_scoring() -> None:
    truth = [Box(0, 0, 30, 30, "with_mask"), Box(100, 0, 10, 10, "without_mask"),
             Box(200, 0, 30, 30, "mask_weared_incorrect")]
    found = [Box(2, 2, 30, 30, "with_mask", 0.9), Box(200, 0, 30, 30, "with_mask", 0.8),
             Box(400, 0, 30, 30, "without_mask", 0.7)]
    assert match(found, truth) == [(0, 0), (1, 2)]
    r = score([Scene("p", truth, found)], classes=["with_mask", "without_mask"])
    assert r["recall"] == pytest.approx(2 / 3) and r["recall_ge24px"] == 1.0 and r["precision"] == pytest.approx(2 / 3)
    assert r["label_accuracy"] == 1.0 and r["recall_with_mask"] == 1.0 and r["recall_without_mask"] is None
    assert r["answers_for_mask_weared_incorrect"] == {"with_mask": 1}
    assert r["count_mae_with_mask"] == 1 and r["count_mae_without_mask"] == 0
    assert r["masked_share_error"] == pytest.approx(2 / 3 - 1 / 3)


def test_scan_command(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import json

    import typer
    from typer.testing import CliRunner

    from flows import scan_cli
    from tasks import tracking

    class ScanningModel:
        """What tracking.load_scanner returns: builds a Scanner with the command's settings."""

        classifier = Classifier(None, PreprocessConfig(), ["with_mask", "without_mask"])
        configs: list[ScanConfig] = []

        def scanner(self, config: ScanConfig) -> Scanner:
            self.configs.append(config)
            return Scanner(FakeClassifier(), config)

    loaded: list[str] = []
    monkeypatch.setattr(tracking, "load_scanner", lambda settings, uri: loaded.append(uri) or ScanningModel())
    app = typer.Typer()
    app.command("scan")(scan_cli.scan)  # how the coordinator mounts it on the main app
    app.command("other")(lambda: None)  # a multi-command app, so "scan" is a sub-command name
    root = tmp_path / "in"
    photo(root / "crowd.jpg", TWO_BIG_ONE_SMALL)
    out = tmp_path / "out"
    ok = CliRunner().invoke(app, ["scan", str(root), "--out", str(out), "--json"])
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["count_with_mask"] == 2
    assert (out / "images" / "in" / "crowd.jpg").is_file() and (out / "scan.csv").is_file()
    assert json.loads((out / "summary.json").read_text())["faces"] == 3
    assert loaded == ["models:/face-mask-scanner@champion"] and not ScanningModel.configs[0].whole_image

    (root / "zero.jpg").write_bytes(b"")
    bad = CliRunner().invoke(app, ["scan", str(root), "--out", str(tmp_path / "out2"), "--no-images"])
    assert bad.exit_code == 1
    assert "masked share" in bad.stdout and "zero.jpg: empty file" in bad.output
    assert not (tmp_path / "out2" / "images").exists()
