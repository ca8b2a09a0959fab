"""Scan class folders, validate, fingerprint, dedupe, cluster near-duplicates, split.

Reading the source itself (URL, zip or folder) is ``maskcls.source``.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from maskcls.config import DataConfig
from maskcls.errors import MaskclsError
from maskcls.preprocess import DecodeError, decode_image, to_gray

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff"}


class DataError(MaskclsError, ValueError):
    """The dataset as a whole cannot be used (one clear paragraph)."""


class Item(BaseModel):
    """One kept image: where it is, its class, its content hash and perceptual hashes."""

    model_config = ConfigDict(frozen=True)

    path: str  # relative to the source root, POSIX separators
    label: str
    sha256: str
    phash: int
    phash_mirror: int
    width: int
    height: int


class Skipped(BaseModel):
    model_config = ConfigDict(frozen=True)

    path: str
    reason: str


class Manifest(BaseModel):
    """What validation kept, what it left out and why."""

    model_config = ConfigDict(frozen=True)

    root: str
    classes: list[str]
    items: list[Item]
    skipped: list[Skipped]
    duplicates: list[tuple[str, str]]  # (left-out path, the kept path with the same bytes)
    fingerprint: str

    @property
    def counts(self) -> dict[str, int]:
        c = Counter(i.label for i in self.items)
        return {k: c.get(k, 0) for k in self.classes}

    def report(self) -> dict:
        """The validation report, as logged to MLflow."""
        return {
            "root": self.root,
            "fingerprint": self.fingerprint,
            "classes": self.classes,
            "kept": len(self.items),
            "counts": self.counts,
            "skipped": [s.model_dump() for s in self.skipped],
            "duplicates": [{"path": a, "same_as": b} for a, b in self.duplicates],
        }


class Split(BaseModel):
    """Train / validation / test sides, decided per near-duplicate cluster."""

    model_config = ConfigDict(frozen=True)

    root: str
    classes: list[str]
    train: list[Item]
    val: list[Item]
    test: list[Item]
    n_clusters: int
    fingerprint: str

    def side(self, name: str) -> list[Item]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            side: {c: sum(1 for i in self.side(side) if i.label == c) for c in self.classes}
            for side in ("train", "val", "test")
        }


def _is_hidden(rel: Path) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in rel.parts)


#: Folder names of a source that is already split; such a split is kept.
PRESET_SIDES = {"train": "train", "test": "test", "val": "val", "validation": "val"}


def preset_layout(root: Path) -> bool:
    """True when root holds ``train/`` and ``test/`` folders (each with class folders)."""
    names = {p.name.lower() for p in Path(root).iterdir() if p.is_dir()} if Path(root).is_dir() else set()
    return {"train", "test"} <= names


def preset_side(path: str) -> str | None:
    """The side a file of a pre-split source belongs to (``train/<class>/x.jpg`` -> train)."""
    first = path.split("/", 1)[0].lower()
    return PRESET_SIDES.get(first) if "/" in path and path.count("/") == 2 else None


def scan(root: Path) -> tuple[list[tuple[str, str]], list[Skipped]]:
    """(relative path, class) of every candidate file, and the files left out with why.

    Classes are the sub-folders of root, sorted; files must sit directly in one. A source
    with ``train/`` and ``test/`` folders has the class folders one level down.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    depth = 3 if preset_layout(root) else 2
    candidates: list[tuple[str, str]] = []
    skipped: list[Skipped] = []
    for path in sorted(root.rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(root)
        rel_s = rel.as_posix()
        if _is_hidden(rel):
            skipped.append(Skipped(path=rel_s, reason="hidden file"))
        elif depth == 3 and rel.parts[0].lower() not in PRESET_SIDES:
            skipped.append(Skipped(path=rel_s, reason="file outside the train/ and test/ folders"))
        elif len(rel.parts) != depth:
            where = "outside any class folder" if len(rel.parts) < depth else "nested below a class folder"
            skipped.append(Skipped(path=rel_s, reason=f"file {where}"))
        elif path.suffix.lower() not in IMAGE_SUFFIXES:
            skipped.append(Skipped(path=rel_s, reason=f"unsupported file type {path.suffix or '(none)'!r}"))
        else:
            candidates.append((rel_s, rel.parts[depth - 2]))
    return candidates, skipped


def _image_header_size(data: bytes) -> tuple[int, int] | None:
    """(width, height) from the header alone, without decoding pixels (bomb guard)."""
    import io

    from PIL import Image

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.size
    except Image.DecompressionBombError:
        # PIL refuses to even open it: report a size that is surely over any sane limit.
        return (2**31, 2**31)
    except Exception:  # noqa: BLE001 - PIL raises many types; OpenCV gets the final say
        return None


def _phash(gray: np.ndarray) -> int:
    """64-bit DCT perceptual hash of a grayscale image."""
    small = cv2.resize(gray, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)
    low = cv2.dct(small)[:8, :8].flatten()
    bits = low > np.median(low[1:])
    return int(np.packbits(bits).view(">u8")[0])


def _check_image(data: bytes, cfg: DataConfig) -> tuple[np.ndarray, int, int]:
    size = _image_header_size(data)
    if size == (2**31, 2**31):
        raise DecodeError(f"image header declares a decompression bomb, over the limit of {cfg.max_pixels} "
                          "pixels (data.max_pixels)")
    if size is not None and size[0] * size[1] > cfg.max_pixels:
        raise DecodeError(f"{size[0]}x{size[1]} pixels exceeds the limit of {cfg.max_pixels} (data.max_pixels)")
    img = decode_image(data)
    h, w = img.shape[:2]
    if h * w > cfg.max_pixels:
        raise DecodeError(f"{w}x{h} pixels exceeds the limit of {cfg.max_pixels} (data.max_pixels)")
    if min(h, w) < cfg.min_side:
        raise DecodeError(f"{w}x{h} is smaller than the minimum side {cfg.min_side} (data.min_side)")
    return img, w, h


def undecodable_reason(data: bytes, decoder_says: str) -> str:
    """Why bytes that failed to decode are not an image, as specifically as the bytes tell."""
    head = data[:512]
    if data[:3] == b"\xff\xd8\xff" and not data.rstrip(b"\0\r\n ").endswith(b"\xff\xd9"):
        return f"truncated JPEG: the file ends before its end-of-image marker ({len(data)} bytes); {decoder_says}"
    if data[:8] == b"\x89PNG\r\n\x1a\n" and b"IEND" not in data[-32:]:
        return f"truncated PNG: the file ends before its IEND chunk ({len(data)} bytes); {decoder_says}"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith((b"<!doctype html", b"<html", b"<head", b"<body")) or b"<html" in stripped[:256]:
        return f"an HTML page saved with an image extension, not an image; {decoder_says}"
    if stripped.startswith(b"<"):
        return f"XML or markup text, not an image; {decoder_says}"
    if head and sum(32 <= c < 127 or c in (9, 10, 13) for c in head) / len(head) > 0.95:
        return f"text, not an image; {decoder_says}"
    return decoder_says


def validate(
    root: Path | str,
    cfg: DataConfig,
    progress: Callable[[int, int], None] | None = None,
) -> Manifest:
    """Decode every candidate once; keep readable images, each distinct content once."""
    root = Path(root)
    candidates, skipped = scan(root)
    by_sha: dict[str, list[tuple[str, str]]] = defaultdict(list)
    decoded: dict[str, tuple[str, str, int, int, int, int]] = {}
    for n, (rel, label) in enumerate(candidates, 1):
        try:
            data = (root / rel).read_bytes()
            img, w, h = _check_image(data, cfg)
        except DecodeError as exc:
            skipped.append(Skipped(path=rel, reason=undecodable_reason(data, str(exc))))
            continue
        except OSError as exc:
            skipped.append(Skipped(path=rel, reason=f"cannot read the file: {exc.strerror or exc}"))
            continue
        finally:
            if progress is not None and (n % 250 == 0 or n == len(candidates)):
                progress(n, len(candidates))
        sha = hashlib.sha256(data).hexdigest()
        by_sha[sha].append((rel, label))
        if sha not in decoded:
            gray = to_gray(img)
            decoded[sha] = (rel, label, _phash(gray), _phash(gray[:, ::-1]), w, h)

    items: list[Item] = []
    duplicates: list[tuple[str, str]] = []
    for sha, copies in by_sha.items():
        labels = sorted({lab for _, lab in copies})
        if len(labels) > 1:
            for rel, _ in copies:
                skipped.append(Skipped(path=rel, reason=f"same content appears in classes {', '.join(labels)}"))
            continue
        copies.sort()
        kept = copies[0][0]
        duplicates.extend((rel, kept) for rel, _ in copies[1:])
        _, label, ph, phm, w, h = decoded[sha]
        items.append(Item(path=kept, label=label, sha256=sha, phash=ph, phash_mirror=phm, width=w, height=h))
    items.sort(key=lambda i: i.path)

    classes = sorted({lab for _, lab in candidates} | {i.label for i in items})
    counts = Counter(i.label for i in items)
    if len([c for c in classes if counts.get(c)]) < 2:
        found = ", ".join(f"{c} ({counts.get(c, 0)})" for c in classes) or "none"
        raise DataError(
            f"{root}: need at least two class folders with valid images, found: {found}. "
            "Expected one sub-folder per class (e.g. with_mask/ and without_mask/) holding the images."
        )
    small = [c for c in classes if counts.get(c, 0) < cfg.min_per_class]
    if small:
        raise DataError(
            f"{root}: class {', '.join(repr(c) for c in small)} has fewer than {cfg.min_per_class} valid "
            f"images ({', '.join(str(counts.get(c, 0)) for c in small)}), too few to split into train and test "
            "(data.min_per_class)."
        )
    return Manifest(
        root=str(root),
        classes=classes,
        items=items,
        skipped=sorted(skipped, key=lambda s: s.path),
        duplicates=sorted(duplicates),
        fingerprint=dataset_fingerprint(items),
    )


def dataset_fingerprint(items: list[Item]) -> str:
    """sha256 over the sorted (relative path, label, content sha256) of the kept files."""
    h = hashlib.sha256()
    for i in sorted(items, key=lambda i: i.path):
        h.update(json.dumps([i.path, i.label, i.sha256]).encode())
        h.update(b"\n")
    return h.hexdigest()


def cluster(items: list[Item], threshold: int) -> list[int]:
    """Near-duplicate cluster index of each item (union-find over perceptual-hash distance).

    Two images are near-duplicates when the Hamming distance between their hashes, or
    between one's hash and the other's mirror hash, is at most ``threshold``.
    """
    n = len(items)
    parent = list(range(n))

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if n == 0:
        return []
    h = np.array([i.phash for i in items], dtype=np.uint64)
    m = np.array([i.phash_mirror for i in items], dtype=np.uint64)
    for a in range(n - 1):
        # Symmetric: a's hash vs b's mirror and a's mirror vs b's hash differ on noisy images.
        d = np.minimum(
            np.bitwise_count(h[a] ^ h[a + 1 :]),
            np.minimum(np.bitwise_count(h[a] ^ m[a + 1 :]), np.bitwise_count(m[a] ^ h[a + 1 :])),
        )
        for b in np.nonzero(d <= threshold)[0]:
            ra, rb = find(a), find(a + 1 + int(b))
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return [find(a) for a in range(n)]


def _unit_hash(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def subset(items: list[Item], classes: list[str], max_images: int, seed: int) -> list[Item]:
    """A stable, class-balanced subset: per class, the items with the smallest hash."""
    per_class = max(1, max_images // len(classes))
    out: list[Item] = []
    for c in classes:
        members = sorted((i for i in items if i.label == c), key=lambda i: _unit_hash(seed, "subset", i.sha256))
        out.extend(members[:per_class])
    return sorted(out, key=lambda i: i.path)


def split(manifest: Manifest, cfg: DataConfig) -> Split:
    """Assign each near-duplicate cluster to one side by a hash of (seed, cluster).

    ``hash(seed, cluster) < test_fraction`` puts a cluster in test; a second hash
    against ``val_fraction`` picks validation among the rest. A cluster is named by the
    smallest content hash among its members, so adding images never moves an
    unrelated image between sides, and every profile sees the same test side.
    """
    # Clusters are formed on the whole manifest, before any subset, so a subset (the smoke
    # profile) puts every image on the same side as the full data does.
    all_items = manifest.items
    all_groups = cluster(all_items, cfg.phash_threshold)
    names: dict[int, str] = {}
    for idx, g in enumerate(all_groups):
        sha = all_items[idx].sha256
        names[g] = min(names.get(g, sha), sha)
    cluster_of = {item.sha256: names[g] for item, g in zip(all_items, all_groups)}
    items = all_items
    if cfg.max_images is not None and cfg.max_images < len(items):
        items = subset(items, manifest.classes, cfg.max_images, cfg.split_seed)
    groups = [cluster_of[i.sha256] for i in items]
    sides: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    for idx, item in enumerate(items):
        name = groups[idx]
        preset = preset_side(item.path)
        if preset == "test" or preset == "val":
            sides[preset].append(item)
        elif preset == "train":
            # A kept train/ folder still gives whole clusters to validation.
            is_val = _unit_hash(cfg.split_seed, "val", name) < cfg.val_fraction
            sides["val" if is_val else "train"].append(item)
        elif _unit_hash(cfg.split_seed, "test", name) < cfg.test_fraction:
            sides["test"].append(item)
        elif _unit_hash(cfg.split_seed, "val", name) < cfg.val_fraction:
            sides["val"].append(item)
        else:
            sides["train"].append(item)
    for side in ("train", "test"):
        have = Counter(i.label for i in sides[side])
        missing = [c for c in manifest.classes if not have.get(c)]
        if missing:
            raise DataError(
                f"{manifest.root}: after grouping near-duplicates, class {', '.join(map(repr, missing))} has no "
                f"image on the {side} side; add images or change data.test_fraction."
            )
    h = hashlib.sha256()
    for side in ("train", "val", "test"):
        h.update(side.encode())
        for i in sides[side]:
            h.update(i.sha256.encode())
    return Split(
        root=manifest.root,
        classes=manifest.classes,
        train=sides["train"],
        val=sides["val"],
        test=sides["test"],
        n_clusters=len(set(groups)),
        fingerprint=h.hexdigest(),
    )


def labels_of(items: list[Item], classes: list[str]) -> np.ndarray:
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index[i.label] for i in items], dtype=np.int64)
