"""Decode -> color mode -> resize -> uint8 arrays. Training and inference share it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import cv2
import numpy as np

from maskcls.config import PreprocessConfig
from maskcls.errors import MaskclsError
from maskcls.files import read_regular
from maskcls.parallel import map_ordered


class DecodeError(MaskclsError, ValueError):
    """The bytes are not an image OpenCV can read."""


def decode_image(data: bytes) -> np.ndarray:
    """Decode encoded image bytes to an 8-bit BGR (H, W, 3) or gray (H, W) array.

    Alpha is dropped (composited on white, so transparent backgrounds do not turn black)
    and 16-bit images are scaled to 8 bits.
    """
    if not data:
        raise DecodeError("empty file")
    buf = np.frombuffer(data, dtype=np.uint8)
    img = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DecodeError("not an image OpenCV can decode")
    if img.dtype == np.uint16:
        img = (img >> 8).astype(np.uint8)
    elif img.dtype != np.uint8:
        img = cv2.normalize(img, None, 0, 255, cv2.NORM_MINMAX).astype(np.uint8)
    if img.ndim == 3 and img.shape[2] == 4:
        alpha = img[:, :, 3:4].astype(np.float32) / 255.0
        img = (img[:, :, :3].astype(np.float32) * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)
    elif img.ndim == 3 and img.shape[2] == 1:
        img = img[:, :, 0]
    if img.ndim not in (2, 3) or img.size == 0:
        raise DecodeError("decoded to an empty image")
    return _apply_exif_orientation(img, data)


# EXIF orientation -> the OpenCV operations that make the image upright (IMREAD_UNCHANGED
# ignores the tag, and phone photos rely on it).
_ORIENT = {
    2: (cv2.flip, 1),
    3: (cv2.rotate, cv2.ROTATE_180),
    4: (cv2.flip, 0),
    6: (cv2.rotate, cv2.ROTATE_90_CLOCKWISE),
    8: (cv2.rotate, cv2.ROTATE_90_COUNTERCLOCKWISE),
}


def _apply_exif_orientation(img: np.ndarray, data: bytes) -> np.ndarray:
    if not data[:2] == b"\xff\xd8":  # only JPEGs carry EXIF orientation in practice
        return img
    try:
        import io

        from PIL import Image

        with Image.open(io.BytesIO(data)) as im:
            orientation = im.getexif().get(0x0112, 1)
    except Exception:  # noqa: BLE001 - no readable EXIF means upright
        return img
    if orientation == 5:  # transpose
        return cv2.transpose(img)
    if orientation == 7:  # transverse
        return cv2.rotate(cv2.transpose(img), cv2.ROTATE_180)
    if orientation in _ORIENT:
        op, arg = _ORIENT[orientation]
        return op(img, arg)
    return img


def to_gray(img: np.ndarray) -> np.ndarray:
    return img if img.ndim == 2 else cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)


_detectors = threading.local()


def largest_face_crop(img: np.ndarray, margin: float) -> np.ndarray:
    """The image cut to its largest detected face grown by ``margin``; the whole image if none is found.

    The detector (``maskcls.detect``, the scanner's own, with its default settings) is made once per
    thread: it is not thread-safe.
    """
    from maskcls.detect import FaceDetector, crop_box

    detector = getattr(_detectors, "detector", None)
    if detector is None:
        detector = _detectors.detector = FaceDetector()
    faces = detector.detect(img)
    if not faces:
        return img
    face = max(faces, key=lambda f: f.w * f.h)
    x, y, w, h = crop_box(face, margin, img.shape[1], img.shape[0])
    return img[y : y + h, x : x + w]


def to_model_input(img: np.ndarray, cfg: PreprocessConfig) -> np.ndarray:
    """One decoded image -> (size, size, channels) uint8, as the model sees it before scaling."""
    if cfg.face_crop:
        img = largest_face_crop(img, cfg.face_margin)
    if cfg.color_mode == "grayscale":
        img = to_gray(img)
    elif img.ndim == 2:
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    else:
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    # INTER_AREA averages when shrinking, which is what nearly every photo here needs.
    img = cv2.resize(img, (cfg.size, cfg.size), interpolation=cv2.INTER_AREA)
    if img.ndim == 2:
        img = img[:, :, None]
    return np.ascontiguousarray(img, dtype=np.uint8)


def preprocess_bytes(data: bytes, cfg: PreprocessConfig) -> np.ndarray:
    return to_model_input(decode_image(data), cfg)


def preprocess_files(
    root: Path,
    paths: Sequence[str],
    cfg: PreprocessConfig,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> np.ndarray:
    """Read ``root/path`` for each path into one (n, size, size, channels) uint8 array.

    The files are decoded and resized on ``workers`` threads (None or 0: every core,
    ``maskcls.parallel``); the array, the error (the first broken file in ``paths`` order)
    and the progress calls are the same for any number.
    """
    out = np.empty((len(paths), cfg.size, cfg.size, cfg.channels), dtype=np.uint8)

    def one(rel: str) -> np.ndarray:
        path = Path(root) / rel
        try:
            return preprocess_bytes(read_regular(path), cfg)
        except DecodeError as exc:
            raise DecodeError(f"{path}: {exc}") from None

    for i, x in enumerate(map_ordered(one, paths, workers)):
        out[i] = x
        if progress is not None and (i + 1) % 500 == 0:
            progress(i + 1, len(paths))
    return out
