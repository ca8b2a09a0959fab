"""Faces in a photo: boxes and scores from OpenCV's YuNet, the model file shipped in the package.

YuNet runs on copies of the photo at most ``tile`` pixels on a side: the photo scaled so
its long side is each of ``DetectConfig.scales`` pixels, and a scale larger than a tile
cut into overlapping tiles. The larger scale is what finds the small faces of street
scenes (YuNet misses faces under about 10 px of its input). Boxes are mapped back to the
photo's pixels, clipped to it, and merged across tiles and scales by non-max suppression.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

MODEL_PATH = Path(__file__).parent / "models" / "face_detection_yunet_2026may.onnx"
#: sha256 of the shipped model file (models/SOURCE.md): checked on every load.
MODEL_SHA256 = "ebafce4e3c118d6554634be5c27ab333b4c047a9a8c3faf1d7cf93101c22f0f0"


class DetectorError(RuntimeError):
    """The detector model file is missing or is not the file this code was tuned with."""


class DetectConfig(BaseModel):
    """Detector settings. The defaults were chosen on the ``tune`` photos of face-mask-scenes
    (``python -m benchmarks.scan --tune``): the box adjustment is the median offset of YuNet's
    boxes from the annotated ones; one 640 px scale at threshold 0.65 had the best F1 (0.81),
    and a second, tiled scale gained 0.01-0.02 of F1 for 5x the time per photo."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    score_threshold: float = Field(0.65, gt=0, lt=1, description="Faces scoring below this are dropped.")
    scales: tuple[int, ...] = Field(
        (640,), min_length=1, description="Long side, in pixels, of each copy of the photo the detector sees "
        "(photos are scaled up or down to it).")
    tile: int = Field(640, ge=64, description="Largest input side the detector runs on; larger copies are tiled.")
    tile_overlap: int = Field(96, ge=0, description="Overlap of neighbouring tiles, so a face on a seam is whole "
                              "in one of them.")
    nms_iou: float = Field(0.3, gt=0, le=1, description="Boxes overlapping more than this (across tiles and "
                           "scales) are one face: the higher score is kept.")
    box_dx: float = Field(0.02, ge=-1, le=1, description="Box centres are moved right by this share of the "
                          "box width (YuNet's boxes sit higher on the head than the annotators' boxes).")
    box_dy: float = Field(0.13, ge=-1, le=1, description="Box centres are moved down by this share of the box "
                          "height.")
    box_w: float = Field(1.04, gt=0, le=4, description="Box widths are scaled by this around the centre.")
    box_h: float = Field(0.89, gt=0, le=4, description="Box heights are scaled by this around the centre.")
    margin: float = Field(0.15, ge=0, le=1, description="Each box is grown by this share of its width and height "
                          "on every side before the face is cropped for the classifier.")
    top_k: int = Field(5000, ge=1, description="Most faces kept per detector call.")


@dataclass(frozen=True)
class Face:
    """A face box in the photo's pixels (clipped to the photo) and the detector's score."""

    x: int
    y: int
    w: int
    h: int
    score: float


def load_model_bytes(path: Path = MODEL_PATH, sha256: str = MODEL_SHA256) -> bytes:
    """The model file's bytes, after checking them against ``sha256``."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DetectorError(f"face detector model {path} cannot be read: {exc.strerror or exc}") from exc
    digest = hashlib.sha256(data).hexdigest()
    if digest != sha256:
        raise DetectorError(f"face detector model {path} has sha256 {digest}, expected {sha256}: "
                            "the file is damaged or not the shipped one; reinstall maskcls")
    return data


def tiles(length: int, tile: int, overlap: int) -> list[tuple[int, int]]:
    """(start, size) of the fewest windows of at most ``tile`` that cover ``length`` with ``overlap``."""
    if length <= tile:
        return [(0, length)]
    n = math.ceil((length - overlap) / (tile - overlap))
    size = math.ceil((length + (n - 1) * overlap) / n)
    step = (length - size) / (n - 1)
    return [(round(k * step), size) for k in range(n)]


def nms(boxes: np.ndarray, scores: np.ndarray, iou: float) -> list[int]:
    """Indices of the boxes (x, y, w, h) kept by greedy non-max suppression, best score first."""
    order = list(np.argsort(-scores, kind="stable"))
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = boxes[:, 2] * boxes[:, 3]
    keep: list[int] = []
    while order:
        i = order.pop(0)
        keep.append(int(i))
        if not order:
            break
        rest = np.array(order)
        iw = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        ih = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = iw * ih
        overlap = inter / np.maximum(area[i] + area[rest] - inter, 1e-9)
        order = [int(j) for j, o in zip(rest, overlap) if o <= iou]
    return keep


def clip_box(x: float, y: float, w: float, h: float, width: int, height: int) -> tuple[int, int, int, int] | None:
    """A box rounded to whole pixels and clipped to a ``width`` x ``height`` image; None if nothing is left."""
    x0, y0 = max(0, int(round(x))), max(0, int(round(y)))
    x1, y1 = min(width, int(round(x + w))), min(height, int(round(y + h)))
    if x1 <= x0 or y1 <= y0:
        return None
    return x0, y0, x1 - x0, y1 - y0


def crop_box(face: Face, margin: float, width: int, height: int) -> tuple[int, int, int, int]:
    """The face's box grown by ``margin`` of its size on every side, clipped: (x, y, w, h)."""
    dx, dy = face.w * margin, face.h * margin
    box = clip_box(face.x - dx, face.y - dy, face.w + 2 * dx, face.h + 2 * dy, width, height)
    assert box is not None  # a clipped face box is inside the image, so its grown box is too
    return box


def adjust(boxes: np.ndarray, c: DetectConfig) -> np.ndarray:
    """Boxes (x, y, w, h) moved and scaled around their centres by the config's box_* settings."""
    cx = boxes[:, 0] + boxes[:, 2] * (0.5 + c.box_dx)
    cy = boxes[:, 1] + boxes[:, 3] * (0.5 + c.box_dy)
    w, h = boxes[:, 2] * c.box_w, boxes[:, 3] * c.box_h
    return np.stack([cx - w / 2, cy - h / 2, w, h], axis=1)


class FaceDetector:
    """YuNet over scaled copies and tiles of a photo. Not thread-safe: one per thread."""

    def __init__(self, config: DetectConfig | None = None, model_path: Path = MODEL_PATH,
                 sha256: str = MODEL_SHA256) -> None:
        self.config = config or DetectConfig()
        model = np.frombuffer(load_model_bytes(model_path, sha256), dtype=np.uint8)
        c = self.config
        # The size is set per call; the threshold here is the final one (later NMS only removes boxes).
        self._net = cv2.FaceDetectorYN.create("onnx", model, np.array([], np.uint8), (c.tile, c.tile),
                                              c.score_threshold, 0.3, c.top_k)

    def detect(self, image: np.ndarray) -> list[Face]:
        """Every face in a BGR or gray image, best score first, in the image's pixels."""
        if image.ndim == 2:
            image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
        height, width = image.shape[:2]
        c = self.config
        found: list[np.ndarray] = []
        for long_side in c.scales:
            f = long_side / max(height, width)
            sw, sh = max(1, round(width * f)), max(1, round(height * f))
            interp = cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR
            scaled = image if (sw, sh) == (width, height) else cv2.resize(image, (sw, sh), interpolation=interp)
            for ty, th in tiles(sh, c.tile, c.tile_overlap):
                for tx, tw in tiles(sw, c.tile, c.tile_overlap):
                    self._net.setInputSize((tw, th))
                    _, rows = self._net.detect(np.ascontiguousarray(scaled[ty:ty + th, tx:tx + tw]))
                    if rows is None:
                        continue
                    rows = rows[:, [0, 1, 2, 3, 14]].astype(np.float64)
                    rows[:, 0] += tx
                    rows[:, 1] += ty
                    rows[:, :4] /= f
                    rows[:, :4] = adjust(rows[:, :4], c)
                    found.append(rows)
        if not found:
            return []
        rows = np.concatenate(found)
        faces: list[Face] = []
        for i in nms(rows[:, :4], rows[:, 4], c.nms_iou):
            box = clip_box(*rows[i, :4], width, height)
            if box is not None:
                faces.append(Face(*box, score=float(rows[i, 4])))
        return faces
