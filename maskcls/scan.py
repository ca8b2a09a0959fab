"""Photos and video in; faces, labels, counts and annotated images out (detect, then classify).

The classifier is any callable from encoded image bytes to (label, probability) pairs: the
registered pyfunc takes a column of encoded images and applies its own training
preprocessing, so the scanner hands it each face crop encoded as PNG (lossless, so the
classifier sees the crop's pixels exactly).
"""

from __future__ import annotations

import csv
import json
import math
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from maskcls.config import DataConfig
from maskcls.data import _check_image, undecodable_reason
from maskcls.detect import DetectConfig, Face, FaceDetector, crop_box
from maskcls.files import Skip, is_image_name, open_regular, read_regular, walk
from maskcls.preprocess import DecodeError

#: Encoded images in, one (label, probability) per image out.
Classify = Callable[[Sequence[bytes]], Sequence[tuple[str, float]]]

MASKED = "with_mask"
VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v", ".mpg", ".mpeg", ".wmv"})
CSV_COLUMNS = ["image", "frame", "time_s", "x", "y", "w", "h", "label", "probability", "detector_score"]
#: Annotated copies keep their input's format when OpenCV can write it, else become PNG.
_WRITABLE = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
_COLOURS = {"with_mask": (60, 180, 60), "without_mask": (40, 40, 220), "mask_weared_incorrect": (0, 165, 255)}
_OTHER_COLOUR = (200, 200, 0)


class ScanConfig(BaseModel):
    """How photos and video are scanned."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    detect: DetectConfig = DetectConfig()
    every_s: float = Field(1.0, gt=0, description="Video: one frame is scanned every this many seconds.")
    whole_image: bool = Field(False, description="With no face found, classify the whole image instead.")
    blur: bool = Field(False, description="Blur every face in the annotated copies.")
    batch_images: int = Field(16, ge=1, description="Images detected before one classifier call on all their "
                              "faces (fewer, larger model calls).")


@dataclass(frozen=True)
class FaceResult:
    x: int
    y: int
    w: int
    h: int
    label: str
    probability: float
    detector_score: float | None  # None when the whole image was classified

    @classmethod
    def from_dict(cls, face: dict[str, Any]) -> FaceResult:
        """A face as the registered scanner returns it (one item of its `faces` JSON list)."""
        score = face.get("detector_score")
        return cls(int(face["x"]), int(face["y"]), int(face["w"]), int(face["h"]), str(face["label"]),
                   float(face["probability"]), None if score is None else float(score))


@dataclass
class ImageResult:
    """One photo or video frame: ``image`` is the input path as given."""

    image: str
    frame: int | None
    time_s: float | None
    faces: list[FaceResult] = field(default_factory=list)
    whole_image: bool = False
    annotated: str | None = None  # path of the annotated copy, relative to the output folder

    @property
    def name(self) -> str:
        return self.image if self.frame is None else f"{self.image} frame {self.frame}"


@dataclass(frozen=True)
class Failure:
    input: str
    reason: str


@dataclass
class ScanResult:
    images: list[ImageResult] = field(default_factory=list)
    failed: list[Failure] = field(default_factory=list)

    def summary(self, classes: Sequence[str] = ()) -> dict[str, Any]:
        """Counts per class, the masked share with its 95% Wilson interval, images without faces, failures."""
        counts = Counter(f.label for r in self.images for f in r.faces)
        faces = sum(counts.values())
        low, high = wilson_interval(counts[MASKED], faces)
        out: dict[str, Any] = {"images": len(self.images), "faces": faces}
        for c in sorted(set(classes) | set(counts)):
            out[f"count_{c}"] = counts[c]
        out.update({
            "masked_share": counts[MASKED] / faces if faces else None,
            "masked_share_low": low, "masked_share_high": high,
            "images_without_faces": [r.name for r in self.images if not r.faces],
            "whole_image_classified": [r.name for r in self.images if r.whole_image],
            "failed": [asdict(f) for f in self.failed],
        })
        return out


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float | None, float | None]:
    """95% Wilson score interval of a proportion (honest for small ``n`` and shares near 0 or 1)."""
    if n == 0:
        return None, None
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Input:
    """A file to scan: ``shown`` is the path as the user gave it (or below a folder they gave),
    ``rel`` names its annotated copy."""

    path: Path
    shown: str
    rel: str


def list_inputs(paths: Sequence[Path | str]) -> tuple[list[Input], list[Failure]]:
    """The files to scan (folders walked for images and videos) and the inputs that cannot be scanned."""
    inputs: list[Input] = []
    failed: list[Failure] = []
    for given in paths:
        p = Path(given)
        if p.is_dir():
            found = 0
            for entry in walk(p):
                if isinstance(entry, Skip):
                    if entry.kind != "hidden":
                        failed.append(Failure(str(p / entry.rel), entry.reason))
                    continue
                found += 1
                if is_image_name(entry.path.name) or entry.path.suffix.lower() in VIDEO_SUFFIXES:
                    inputs.append(Input(entry.path, str(p / entry.rel), f"{p.resolve().name}/{entry.rel}"))
                else:
                    failed.append(Failure(str(p / entry.rel), "not an image or video file "
                                          f"(suffix {entry.path.suffix or '(none)'!r})"))
            if not found:
                failed.append(Failure(str(given), "empty folder: no image or video files in it"))
        elif p.exists():
            inputs.append(Input(p, str(given), p.name))
        else:
            failed.append(Failure(str(given), "no such file or folder"))
    return _unique(inputs), failed


def _unique(inputs: list[Input]) -> list[Input]:
    """Inputs whose annotated names collide (same folder name, same file name) get -2, -3... suffixes."""
    seen: Counter[str] = Counter()
    out = []
    for inp in inputs:
        key = inp.rel.lower()
        seen[key] += 1
        if seen[key] > 1:
            stem, dot, suffix = inp.rel.rpartition(".")
            rel = f"{stem}-{seen[key]}.{suffix}" if dot else f"{inp.rel}-{seen[key]}"
            inp = Input(inp.path, inp.shown, rel)
        out.append(inp)
    return out


def annotated_name(rel: str, frame: int | None) -> str:
    """Where an input's annotated copy goes, relative to the output's image folder."""
    path = Path(rel)
    if frame is not None:
        return f"{rel}-frame{frame:06d}.jpg"
    return str(path if path.suffix.lower() in _WRITABLE else path.with_name(path.name + ".png"))


def read_image(data: bytes) -> np.ndarray:
    """Decode a photo, refusing truncated files and images over the pixel limit (data.max_pixels)."""
    try:
        image, _, _ = _check_image(data, DataConfig(min_side=1))
    except DecodeError as exc:
        raise DecodeError(undecodable_reason(data, str(exc))) from exc
    # OpenCV fills a truncated JPEG's missing rows with grey and decodes it anyway.
    reason = undecodable_reason(data, "decoded only in part")
    if reason.startswith("truncated"):
        raise DecodeError(reason)
    return image if image.ndim == 3 else cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)


def _frames(inp: Input, every_s: float) -> Iterator[tuple[int | None, float | None, np.ndarray]]:
    """(frame, time_s, image) of a photo (frame None) or of a video's sampled frames."""
    if inp.path.suffix.lower() not in VIDEO_SUFFIXES:
        yield None, None, read_image(read_regular(inp.path))
        return
    with open_regular(inp.path):  # refuses a pipe or device before OpenCV opens it
        pass
    cap = cv2.VideoCapture(str(inp.path))
    try:
        if not cap.isOpened():
            raise DecodeError("cannot open the video (not a video, or a format OpenCV cannot read)")
        fps = cap.get(cv2.CAP_PROP_FPS)
        fps = fps if fps and fps > 0 else 25.0  # some containers do not say; 25 is the common rate
        step = max(1, round(every_s * fps))
        index = sampled = 0
        while cap.grab():
            if index % step == 0:
                ok, frame = cap.retrieve()
                if ok:
                    sampled += 1
                    yield index, round(index / fps, 3), frame
            index += 1
        if not sampled:
            raise DecodeError("the video has no readable frame")
    finally:
        cap.release()


def draw(image: np.ndarray, faces: Sequence[FaceResult], blur: bool) -> np.ndarray:
    """A copy with each face boxed in its class colour, label and probability above it (faces blurred first)."""
    out = image.copy()
    height, width = out.shape[:2]
    thick = max(1, round(max(height, width) / 400))
    scale = max(0.35, max(height, width) / 1400)
    for f in faces:
        if blur:
            roi = out[f.y:f.y + f.h, f.x:f.x + f.w]
            k = max(3, (min(f.w, f.h) // 3) | 1)
            out[f.y:f.y + f.h, f.x:f.x + f.w] = cv2.GaussianBlur(roi, (k, k), 0)
    for f in faces:
        colour = _COLOURS.get(f.label, _OTHER_COLOUR)
        cv2.rectangle(out, (f.x, f.y), (f.x + f.w - 1, f.y + f.h - 1), colour, thick)
        text = f"{f.label} {f.probability:.2f}"
        (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        ty = f.y - 2 if f.y - th - base - 2 >= 0 else min(height - base, f.y + f.h + th + 2)
        tx = max(0, min(f.x, width - tw))  # the label stays inside the image
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw, ty + base // 2), colour, cv2.FILLED)
        cv2.putText(out, text, (tx, ty - base // 2), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)
    return out


def _png(image: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".png", image)
    assert ok  # encoding a uint8 BGR array as PNG cannot fail
    return buf.tobytes()


@dataclass
class _Pending:
    result: ImageResult
    image: np.ndarray
    faces: list[Face]


class Scanner:
    """Detect faces in photos and video frames, classify each face, write annotated copies."""

    def __init__(self, classify: Classify, config: ScanConfig | None = None,
                 detector: FaceDetector | None = None) -> None:
        self.classify = classify
        self.config = config or ScanConfig()
        self.detector = detector or FaceDetector(self.config.detect)

    def scan(self, paths: Sequence[Path | str], images_dir: Path | None = None,
             progress: Callable[[int, int], None] | None = None) -> ScanResult:
        """Scan files and folders; annotated copies go under ``images_dir`` unless it is None.

        A bad input is recorded with its reason and the batch goes on; ``progress(done, total)``
        is called after each input.
        """
        inputs, failed = list_inputs(paths)
        result = ScanResult(failed=failed)
        pending: list[_Pending] = []
        for n, inp in enumerate(inputs, 1):
            try:
                for frame, time_s, image in _frames(inp, self.config.every_s):
                    r = ImageResult(inp.shown, frame, time_s)
                    if images_dir is not None:
                        r.annotated = annotated_name(inp.rel, frame)
                    pending.append(_Pending(r, image, self.detector.detect(image)))
                    if len(pending) >= self.config.batch_images:
                        self._finish(pending, result, images_dir)
            except (DecodeError, OSError) as exc:
                reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                result.failed.append(Failure(inp.shown, reason))
            if progress is not None:
                progress(n, len(inputs))
        self._finish(pending, result, images_dir)
        return result

    def scan_arrays(self, images: Sequence[np.ndarray]) -> list[ImageResult]:
        """Faces and labels of decoded BGR photos, one result each in order (no files read or written)."""
        result = ScanResult()
        self._finish([_Pending(ImageResult(str(k), None, None), image, self.detector.detect(image))
                      for k, image in enumerate(images)], result, None)
        return result.images

    def _finish(self, pending: list[_Pending], result: ScanResult, images_dir: Path | None) -> None:
        """Classify the faces of the pending images in one call, record them, write their copies."""
        crops: list[bytes] = []
        for p in pending:
            height, width = p.image.shape[:2]
            if p.faces:
                for f in p.faces:
                    x, y, w, h = crop_box(f, self.config.detect.margin, width, height)
                    crops.append(_png(p.image[y:y + h, x:x + w]))
            elif self.config.whole_image:
                crops.append(_png(p.image))
        answers = iter(self.classify(crops) if crops else [])
        for p in pending:
            height, width = p.image.shape[:2]
            if p.faces:
                for f in p.faces:
                    label, prob = next(answers)
                    p.result.faces.append(FaceResult(f.x, f.y, f.w, f.h, label, float(prob), f.score))
            elif self.config.whole_image:
                label, prob = next(answers)
                p.result.faces.append(FaceResult(0, 0, width, height, label, float(prob), None))
                p.result.whole_image = True
            if images_dir is not None:
                failure = write_annotated(images_dir, p.result, p.image, self.config.blur)
                if failure is not None:
                    result.failed.append(failure)
            result.images.append(p.result)
        pending.clear()


def write_annotated(images_dir: Path, result: ImageResult, image: np.ndarray, blur: bool) -> Failure | None:
    """Write ``result``'s annotated copy of ``image`` to ``images_dir / result.annotated`` (nothing when
    that is None); a copy that cannot be written is a Failure and leaves ``annotated`` None."""
    if result.annotated is None:
        return None
    target = images_dir / result.annotated
    target.parent.mkdir(parents=True, exist_ok=True)
    if cv2.imwrite(str(target), draw(image, result.faces, blur)):
        return None
    result.annotated = None
    return Failure(result.name, f"cannot write the annotated copy {target}")


def write_csv(path: Path, result: ScanResult) -> None:
    """One row per face: ``image,frame,time_s,x,y,w,h,label,probability,detector_score``
    (frame and time_s empty for photos, detector_score empty for a whole-image answer)."""
    with path.open("w", newline="") as fh:
        out = csv.writer(fh)
        out.writerow(CSV_COLUMNS)
        for r in result.images:
            for f in r.faces:
                out.writerow([r.image, "" if r.frame is None else r.frame, "" if r.time_s is None else r.time_s,
                              f.x, f.y, f.w, f.h, f.label, f"{f.probability:.4f}",
                              "" if f.detector_score is None else f"{f.detector_score:.4f}"])


def write_summary(path: Path, summary: dict[str, Any]) -> None:
    path.write_text(json.dumps(summary, indent=2) + "\n")
