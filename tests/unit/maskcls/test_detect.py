"""maskcls.detect: YuNet on canvases of shared face photos at known places; box geometry; model check."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.detect import (
    MODEL_PATH,
    DetectConfig,
    DetectorError,
    Face,
    FaceDetector,
    adjust,
    clip_box,
    crop_box,
    load_model_bytes,
    nms,
    tiles,
)

FACES = Path(__file__).resolve().parents[3].parent / "shared/datasets/face-mask"
# Close crops YuNet finds alone on a grey canvas with a score above 0.85 (two of each class).
FACE_FILES = ["with_mask/0_0_0 copy 10.jpg", "without_mask/0_0_aidai_0014.jpg",
              "with_mask/0_0_0 copy 12.jpg", "without_mask/0_0_aidai_0029.jpg"]


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector(DetectConfig(score_threshold=0.6))


def canvas(width: int, height: int, side: int, places: list[tuple[int, int]]) -> np.ndarray:
    """A grey ``width`` x ``height`` image with face photos ``side`` px square at ``places`` (top-left)."""
    img = np.full((height, width, 3), 128, np.uint8)
    for (x, y), name in zip(places, FACE_FILES):
        face = cv2.imread(str(FACES / name))
        img[y:y + side, x:x + side] = cv2.resize(face, (side, side))
    return img


def assert_found(faces: list[Face], places: list[tuple[int, int]], side: int) -> None:
    """One box per placed face, its centre inside the face's square, and no other box."""
    assert len(faces) == len(places), faces
    for x, y in places:
        hits = [f for f in faces if x <= f.x + f.w / 2 <= x + side and y <= f.y + f.h / 2 <= y + side]
        assert len(hits) == 1, (x, y, faces)
        assert 0.6 * side <= hits[0].w <= 1.3 * side


def test_faces_at_known_places_in_a_640_canvas(detector: FaceDetector) -> None:
    places = [(20, 20), (400, 40), (60, 300), (420, 300)]
    faces = detector.detect(canvas(640, 480, 150, places))
    assert_found(faces, places, 150)
    assert all(0.6 <= f.score <= 1 for f in faces)
    assert [f.score for f in faces] == sorted((f.score for f in faces), reverse=True)


def test_boxes_map_back_from_a_downscaled_photo(detector: FaceDetector) -> None:
    # 2560 px wide: detected on a copy 4x smaller, the boxes come back in the photo's own pixels.
    places = [(100, 100), (1500, 200), (300, 1100), (2000, 1000)]
    faces = detector.detect(canvas(2560, 1920, 560, places))
    assert_found(faces, places, 560)


def test_boxes_map_back_from_an_upscaled_small_photo(detector: FaceDetector) -> None:
    places = [(10, 10), (170, 110)]
    faces = detector.detect(canvas(320, 240, 110, places))
    assert_found(faces, places, 110)


def test_gray_image_and_empty_canvas(detector: FaceDetector) -> None:
    gray = cv2.cvtColor(canvas(640, 480, 150, [(200, 150)]), cv2.COLOR_BGR2GRAY)
    assert len(detector.detect(gray)) == 1
    assert detector.detect(np.full((480, 640, 3), 128, np.uint8)) == []


def test_second_scale_is_tiled_and_merged() -> None:
    # 1280 on a 640 canvas means 2x2 tiles; a face seen in several tiles and both scales is one box.
    det = FaceDetector(DetectConfig(score_threshold=0.6, scales=(640, 1280), tile=640))
    places = [(245, 165)]  # straddles the middle, where the tiles meet
    assert_found(det.detect(canvas(640, 480, 150, places)), places, 150)


def test_faces_on_the_edge_are_clipped_to_the_image(detector: FaceDetector) -> None:
    img = canvas(640, 480, 150, [(0, 0)])
    img = np.ascontiguousarray(img[30:, 20:])  # the face now sticks out over the top-left corner
    faces = detector.detect(img)
    assert len(faces) == 1
    f = faces[0]
    assert f.x >= 0 and f.y >= 0 and f.x + f.w <= img.shape[1] and f.y + f.h <= img.shape[0]


def test_tiles_cover_the_length_within_the_tile_size() -> None:
    assert tiles(500, 640, 96) == [(0, 500)]
    for length in (641, 1000, 1280, 1921, 5000):
        parts = tiles(length, 640, 96)
        assert all(size <= 640 for _, size in parts)
        assert parts[0][0] == 0 and parts[-1][0] + parts[-1][1] == length
        for (a, sa), (b, _) in zip(parts, parts[1:]):
            assert a + sa - b >= 96  # neighbours overlap by at least the overlap


def test_clip_box() -> None:
    assert clip_box(-5.4, 10.2, 30, 20, 100, 100) == (0, 10, 25, 20)
    assert clip_box(90, 95, 30, 20, 100, 100) == (90, 95, 10, 5)
    assert clip_box(120, 10, 30, 20, 100, 100) is None


def test_crop_box_grows_by_the_margin_and_stays_inside() -> None:
    assert crop_box(Face(40, 40, 20, 10, 0.9), 0.5, 100, 100) == (30, 35, 40, 20)
    assert crop_box(Face(0, 0, 20, 10, 0.9), 0.5, 100, 100) == (0, 0, 30, 15)
    assert crop_box(Face(90, 95, 10, 5, 0.9), 0.0, 100, 100) == (90, 95, 10, 5)


def test_adjust_moves_and_scales_around_the_centre() -> None:
    boxes = np.array([[10.0, 20.0, 40.0, 50.0]])
    out = adjust(boxes, DetectConfig(box_dx=0.1, box_dy=0.2, box_w=0.5, box_h=2.0))
    # centre (30, 45) -> (34, 55); size 20 x 100
    assert np.allclose(out, [[24.0, 5.0, 20.0, 100.0]])


def test_nms_keeps_the_best_of_overlapping_boxes() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 10, 10], [50, 50, 10, 10], [0, 0, 10, 10]], float)
    scores = np.array([0.7, 0.9, 0.8, 0.6])
    assert nms(boxes, scores, 0.3) == [1, 2]
    assert sorted(nms(boxes, scores, 1.0)) == [0, 1, 2, 3]


def test_model_checksum_is_checked(tmp_path: Path) -> None:
    assert len(load_model_bytes()) == MODEL_PATH.stat().st_size
    bad = tmp_path / "yunet.onnx"
    bad.write_bytes(MODEL_PATH.read_bytes()[:-1] + b"\0")
    with pytest.raises(DetectorError, match=r"yunet\.onnx has sha256 .* expected ebafce4e"):
        FaceDetector(model_path=bad)
    with pytest.raises(DetectorError, match=r"missing\.onnx cannot be read"):
        load_model_bytes(tmp_path / "missing.onnx")
