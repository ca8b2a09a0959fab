"""Scan class folders, validate, fingerprint, dedupe, cluster near-duplicates, split.

Reading the source itself (URL, zip or folder) is ``maskcls.source``.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import re
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
from pydantic import BaseModel, ConfigDict

from maskcls.config import DataConfig
from maskcls.errors import MaskclsError
from maskcls.files import is_image_name, is_split_root, read_regular, scan_tree
from maskcls.parallel import map_ordered
from maskcls.preprocess import DecodeError, decode_image, to_gray


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
    #: The article protocol: this share of the augmented training samples is validation
    #: (taken after augmentation, seed ``val_seed``); 0 means validation is the ``val`` side.
    val_after_augment: float = 0.0
    val_seed: int = 0
    #: Images on no side: under data.holdout_family, the other families' near-duplicates of it.
    left_out: list[str] = []

    def side(self, name: str) -> list[Item]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    def counts(self) -> dict[str, dict[str, int]]:
        return {
            side: {c: sum(1 for i in self.side(side) if i.label == c) for c in self.classes}
            for side in ("train", "val", "test")
        }


#: Folder names of a source that is already split; such a split is kept.
PRESET_SIDES = {"train": "train", "test": "test", "val": "val", "validation": "val"}


def preset_side(path: str) -> str | None:
    """The side a file of a pre-split source belongs to (``train/<class>/x.jpg`` -> train)."""
    first = path.split("/", 1)[0].lower()
    return PRESET_SIDES.get(first) if "/" in path and path.count("/") == 2 else None


def scan(root: Path) -> tuple[list[tuple[str, str]], list[Skipped]]:
    """(relative path, class) of every candidate file, and the entries left out with why.

    Classes are the sub-folders of root, sorted; files must sit directly in one. A source
    with ``train/`` and ``test/`` folders has the class folders one level down. Only
    regular files are candidates (``maskcls.files.walk``): pipes, devices, sockets and
    links that leave root or loop are left out with their reason, never opened.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: dataset folder does not exist")
    depth = 3 if is_split_root(root) else 2
    files, walked = scan_tree(root)
    candidates: list[tuple[str, str]] = []
    skipped = [Skipped(path=s.rel, reason=s.reason) for s in walked]
    for entry in files:
        parts = entry.rel.split("/")
        if depth == 3 and parts[0].lower() not in PRESET_SIDES:
            skipped.append(Skipped(path=entry.rel, reason="file outside the train/ and test/ folders"))
        elif len(parts) != depth:
            where = "outside any class folder" if len(parts) < depth else "nested below a class folder"
            skipped.append(Skipped(path=entry.rel, reason=f"file {where}"))
        elif not is_image_name(parts[-1]):
            suffix = Path(parts[-1]).suffix
            skipped.append(Skipped(path=entry.rel, reason=f"unsupported file type {suffix or '(none)'!r}"))
        else:
            candidates.append((entry.rel, parts[depth - 2]))
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


def _inspect(path: Path, cfg: DataConfig) -> tuple[str, int, int, int, int] | str:
    """(content sha256, perceptual hash, mirror hash, width, height) of a usable image, or why it is skipped.

    Reads and decodes one file; safe to run in several threads at once.
    """
    try:
        data = read_regular(path)
        img, w, h = _check_image(data, cfg)
    except DecodeError as exc:
        return undecodable_reason(data, str(exc))
    except OSError as exc:
        return f"cannot read the file: {exc.strerror or exc}"
    gray = to_gray(img)
    return hashlib.sha256(data).hexdigest(), _phash(gray), _phash(gray[:, ::-1]), w, h


def validate(
    root: Path | str,
    cfg: DataConfig,
    progress: Callable[[int, int], None] | None = None,
    workers: int | None = None,
) -> Manifest:
    """Decode every candidate once; keep readable images, each distinct content once.

    The candidates are decoded on ``workers`` threads (None or 0: every core,
    ``maskcls.parallel``); the manifest, the reasons and the progress calls are the same
    for any number.
    """
    root = Path(root)
    candidates, skipped = scan(root)
    by_sha: dict[str, list[tuple[str, str]]] = defaultdict(list)
    decoded: dict[str, tuple[str, str, int, int, int, int]] = {}
    checked = map_ordered(lambda c: _inspect(root / c[0], cfg), candidates, workers)
    for n, ((rel, label), found) in enumerate(zip(candidates, checked, strict=True), 1):
        if progress is not None and (n % 250 == 0 or n == len(candidates)):
            progress(n, len(candidates))
        if isinstance(found, str):
            skipped.append(Skipped(path=rel, reason=found))
            continue
        sha, ph, phm, w, h = found
        by_sha[sha].append((rel, label))
        if sha not in decoded:
            decoded[sha] = (rel, label, ph, phm, w, h)

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
    """Near-duplicate cluster of each item: the smallest index in its connected component.

    Two images are near-duplicates when the Hamming distance between their hashes, or
    between one's hash and the other's mirror hash, is at most ``threshold``; clusters
    are the transitive closure. Candidates come from multi-index hashing
    (``near_pairs``), so the work grows with the number of candidate pairs, not n^2.
    """
    n = len(items)
    if n == 0:
        return []
    h = np.array([i.phash for i in items], dtype=np.uint64)
    m = np.array([i.phash_mirror for i in items], dtype=np.uint64)
    a, b = near_pairs(h, m, threshold)
    return _components(n, a, b).tolist()


def _ball(width: int, radius: int) -> int:
    """How many keys of ``width`` bits lie within Hamming ``radius`` of one key."""
    return sum(math.comb(width, k) for k in range(min(radius, width) + 1))


def _block_widths(blocks: int) -> list[int]:
    return [64 // blocks + (1 if k < 64 % blocks else 0) for k in range(blocks)]


def index_blocks(n: int, threshold: int) -> int:
    """How many blocks to split the 64-bit hashes into, for ``n`` hashes, by estimated work.

    With ``blocks`` blocks, two hashes within ``threshold`` have some block within
    ``threshold // blocks`` of each other (pigeonhole); ``threshold + 1`` blocks need exact
    block matches. Work per query: its probes plus the candidates they hit, estimated for
    uniformly spread hashes.
    """
    def cost(blocks: int) -> float:
        radius = threshold // blocks
        return sum(_ball(w, radius) * (1 + n / 2**w) for w in _block_widths(blocks))

    return min(range(1, min(threshold + 1, 64) + 1), key=cost)


# Bounds on the arrays built at once: probes per query chunk, candidate pairs per check.
_PROBES_PER_CHUNK = 1 << 20
_PAIRS_PER_CHECK = 1 << 22


def near_pairs(
    h: np.ndarray, m: np.ndarray, threshold: int, blocks: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Index pairs (a, b), a != b, of near-duplicates under the mirror rule, by multi-index hashing.

    ``h`` and ``m`` are the uint64 hashes and mirror hashes. Each block of ``h`` is sorted
    once; the same block of every ``h`` and ``m`` is probed with each key within
    ``threshold // blocks`` bits, and every hit is checked exactly. Probing with ``m``
    finds the pairs where one's mirror is near the other's hash. A pair may come out
    more than once. ``blocks`` defaults to ``index_blocks``.
    """
    blocks = index_blocks(len(h), threshold) if blocks is None else blocks
    if not 1 <= blocks <= 64:
        raise ValueError(f"the 64-bit hashes cannot be split into {blocks} blocks")
    # Pigeonhole: if every block differed in more than `radius` bits, the hashes would differ
    # in blocks * (radius + 1) > threshold bits.
    radius = threshold // blocks
    out_a: list[np.ndarray] = []
    out_b: list[np.ndarray] = []
    low = 0
    for width in _block_widths(blocks):
        mask = np.uint64((1 << width) - 1)
        # Table lookups index with int64; a wider block keeps uint64 (a 64-bit block overflows int64).
        kind = np.int64 if width <= _TABLE_BITS else np.uint64
        keys = ((h >> np.uint64(low)) & mask).astype(kind)
        order = np.argsort(keys, kind="stable")
        bounds = _bucket_bounds(keys, order, width)
        flips = np.array(
            [sum(1 << bit for bit in bits) for k in range(min(radius, width) + 1)
             for bits in itertools.combinations(range(width), k)],
            dtype=kind,
        )
        step = max(1, _PROBES_PER_CHUNK // len(flips))
        # Probing with the hashes finds hash/hash pairs from both ends (kept once, a < b);
        # probing with the mirrors finds mirror(a)/hash(b) pairs, from a's end only.
        for query, both_ends in ((h, True), (m, False)):
            qkeys = ((query >> np.uint64(low)) & mask).astype(kind)
            for start in range(0, len(query), step):
                probes = (qkeys[start : start + step, None] ^ flips[None, :]).ravel()
                left, right = bounds(probes)
                rows = np.repeat(np.arange(start, min(start + step, len(query))), len(flips))
                for a, b in _expand(rows, left, right - left, order):
                    keep = a < b if both_ends else a != b
                    a, b = a[keep], b[keep]
                    near = np.bitwise_count(query[a] ^ h[b]) <= threshold
                    out_a.append(a[near])
                    out_b.append(b[near])
        low += width
    if not out_a:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    return np.concatenate(out_a), np.concatenate(out_b)


# Blocks up to this many bits are looked up in a table of bucket offsets (2**22 entries at
# most, 32 MiB); wider ones by binary search in the sorted keys.
_TABLE_BITS = 22


def _bucket_bounds(
    keys: np.ndarray, order: np.ndarray, width: int
) -> Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """A function from probe keys to the [left, right) range of ``order`` holding each key."""
    if width <= _TABLE_BITS:
        offsets = np.zeros((1 << width) + 1, dtype=np.int64)
        np.cumsum(np.bincount(keys, minlength=1 << width), out=offsets[1:])
        return lambda probes: (offsets[probes], offsets[probes + 1])
    sorted_keys = keys[order]
    return lambda probes: (np.searchsorted(sorted_keys, probes, "left"), np.searchsorted(sorted_keys, probes, "right"))


def _expand(
    rows: np.ndarray, left: np.ndarray, counts: np.ndarray, order: np.ndarray
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """The (query, hit) index pairs of probe results, in pieces of about ``_PAIRS_PER_CHECK``."""
    hit = counts > 0
    rows, left, counts = rows[hit], left[hit], counts[hit]
    ends = np.cumsum(counts)
    start = 0
    while start < len(counts):
        base = ends[start - 1] if start else 0
        stop = max(start + 1, int(np.searchsorted(ends, base + _PAIRS_PER_CHECK, "right")))
        c = counts[start:stop]
        total = int(c.sum())
        offsets = np.repeat(left[start:stop] - (np.cumsum(c) - c), c) + np.arange(total)
        yield np.repeat(rows[start:stop], c), order[offsets]
        start = stop


def _components(n: int, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Union-find over the edges (a, b), vectorised: each node's root is the smallest index of its component.

    Each round hooks every root that has an edge to another tree under the smaller root,
    then compresses paths fully; the number of trees at least halves per round.
    """
    parent = np.arange(n)
    while True:
        ra, rb = parent[a], parent[b]
        apart = ra != rb
        if not apart.any():
            return parent
        ra, rb = ra[apart], rb[apart]
        low = np.minimum(ra, rb)
        np.minimum.at(parent, ra, low)
        np.minimum.at(parent, rb, low)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped


#: Separator of a composed source's file names: ``<part tag>~<group>~<original name>``.
GROUP_SEP = "~"
_COMPOSED = re.compile(r"^([a-z0-9_-]+)~([^~/]*)~[^/]+$")


def composed_name(tag: str, group: str, name: str) -> str:
    """The file name of an image in a composed source (``maskcls.multisource``): its part's tag,
    its group (the scene photo a face was cut from, the person of a file; empty for none), its name."""
    return f"{tag}{GROUP_SEP}{group.replace(GROUP_SEP, '-').replace('/', '-')}{GROUP_SEP}{name}"


def source_group(path: str) -> str | None:
    """The group of an item of a composed source (``part tag~group``), or None (no group, or a plain source)."""
    found = _COMPOSED.match(path.rsplit("/", 1)[-1])
    if not found or not found.group(2):
        return None
    return f"{found.group(1)}{GROUP_SEP}{found.group(2)}"


def with_source_groups(items: list[Item], clusters: list[int]) -> list[int]:
    """Near-duplicate clusters joined wherever two items share a source group (one scene photo's
    faces, one person's files), so a group lands on one side; each item's component is the
    smallest index in it, as ``cluster`` gives."""
    n = len(items)
    if n == 0:
        return []
    first: dict[str, int] = {}
    a = [np.arange(n)]
    b = [np.asarray(clusters, dtype=np.int64)]
    pairs = [(first.setdefault(g, k), k) for k, i in enumerate(items) if (g := source_group(i.path)) is not None]
    if pairs:
        a.append(np.array([x for x, _ in pairs], dtype=np.int64))
        b.append(np.array([y for _, y in pairs], dtype=np.int64))
    return _components(n, np.concatenate(a), np.concatenate(b)).tolist()


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
    if cfg.protocol == "article":
        return article_split(manifest, cfg)
    if cfg.holdout_family is not None:
        return holdout_split(manifest, cfg)
    # Clusters are formed on the whole manifest, before any subset, so a subset (the smoke
    # profile) puts every image on the same side as the full data does.
    all_items = manifest.items
    all_groups = with_source_groups(all_items, cluster(all_items, cfg.phash_threshold))
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


#: The article's test share: 1,492 of its 4,962 files.
ARTICLE_TEST_FRACTION = 0.3


def with_duplicates(manifest: Manifest) -> list[Item]:
    """The kept items plus every byte-identical copy validation left out, each under its own path."""
    by_path = {i.path: i for i in manifest.items}
    copies = [by_path[kept].model_copy(update={"path": path}) for path, kept in manifest.duplicates
              if kept in by_path]
    return sorted([*manifest.items, *copies], key=lambda i: i.path)


def _sides_fingerprint(sides: dict[str, list[Item]], *extra: object) -> str:
    h = hashlib.sha256()
    for part in extra:
        h.update(f"{part}".encode())
    for side in ("train", "val", "test"):
        h.update(side.encode())
        for i in sides[side]:
            h.update(i.sha256.encode())
    return h.hexdigest()


def _check_classes(manifest: Manifest, sides: dict[str, list[Item]], names: tuple[str, ...], how: str) -> None:
    for side in names:
        have = Counter(i.label for i in sides[side])
        missing = [c for c in manifest.classes if not have.get(c)]
        if missing:
            raise DataError(f"{manifest.root}: {how}, class {', '.join(map(repr, missing))} has no image on the "
                            f"{side} side; add images or change the data settings.")


def article_split(manifest: Manifest, cfg: DataConfig) -> Split:
    """The 2020 article's split (``data.protocol=article``), which leaks, to reproduce its figures.

    By file, not by near-duplicate cluster, with the exact duplicates validation set aside put
    back; 30% of the files for test, stratified by class (scikit-learn's ``train_test_split``,
    ``random_state=data.split_seed``); no validation side: ``val_after_augment`` tells the
    augment stage to take ``data.val_fraction`` of the augmented samples instead. A source's
    own ``test/`` folder is kept as the test side.
    """
    from sklearn.model_selection import train_test_split

    items = with_duplicates(manifest)
    if cfg.max_images is not None and cfg.max_images < len(items):
        # Copies share their content hash, so a subset takes all of them or none.
        items = subset(items, manifest.classes, cfg.max_images, cfg.split_seed)
    sides: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    free: list[Item] = []
    for item in items:
        preset = preset_side(item.path)
        (sides["test"] if preset == "test" else sides["train"] if preset else free).append(item)
    if free:
        try:
            train, test = train_test_split(free, test_size=ARTICLE_TEST_FRACTION, random_state=cfg.split_seed,
                                           stratify=[i.label for i in free])
        except ValueError as exc:
            raise DataError(f"{manifest.root}: cannot hold out {ARTICLE_TEST_FRACTION:.0%} of {len(free)} files "
                            f"stratified by class under data.protocol=article: {exc}") from None
        sides["train"] += sorted(train, key=lambda i: i.path)
        sides["test"] += sorted(test, key=lambda i: i.path)
    _check_classes(manifest, sides, ("train", "test"), "under data.protocol=article")
    return Split(
        root=manifest.root, classes=manifest.classes, train=sides["train"], val=[], test=sides["test"],
        n_clusters=len({i.sha256 for i in items}),
        fingerprint=_sides_fingerprint(sides, "article", cfg.val_fraction, cfg.split_seed),
        val_after_augment=cfg.val_fraction, val_seed=cfg.split_seed,
    )


def holdout_split(manifest: Manifest, cfg: DataConfig) -> Split:
    """Hold one origin family out (``data.holdout_family``): its images are the test side, alone.

    Images of other families in a near-duplicate cluster with one of its images are left
    out of every side (``Split.left_out``), so nothing near-duplicate of a test image is
    trained on; the rest go to train and validation by cluster, with the rule of ``split``.
    A source's own train/test folders are not kept: the family decides the test side.
    """
    from maskcls.origins import family_of

    family = cfg.holdout_family
    all_items = manifest.items
    groups = cluster(all_items, cfg.phash_threshold)
    names: dict[int, str] = {}
    for item, g in zip(all_items, groups):
        names[g] = min(names.get(g, item.sha256), item.sha256)
    cluster_of = {item.sha256: names[g] for item, g in zip(all_items, groups)}
    held = {cluster_of[i.sha256] for i in all_items if family_of(i.path) == family}
    if not held:
        found = sorted({f for i in all_items if (f := family_of(i.path))})
        raise DataError(f"{manifest.root}: data.holdout_family={family!r} matches no image here; the families "
                        f"found are {', '.join(found) or 'none'} (docs/origins.md).")
    items = all_items
    if cfg.max_images is not None and cfg.max_images < len(items):
        items = subset(items, manifest.classes, cfg.max_images, cfg.split_seed)
    sides: dict[str, list[Item]] = {"train": [], "val": [], "test": []}
    left_out: list[str] = []
    for item in items:
        name = cluster_of[item.sha256]
        if family_of(item.path) == family:
            sides["test"].append(item)
        elif name in held:
            left_out.append(item.path)
        elif _unit_hash(cfg.split_seed, "val", name) < cfg.val_fraction:
            sides["val"].append(item)
        else:
            sides["train"].append(item)
    if not sides["test"]:
        raise DataError(f"{manifest.root}: data.holdout_family={family!r} has no image in the data.max_images="
                        f"{cfg.max_images} subset; raise data.max_images.")
    _check_classes(manifest, sides, ("train",), f"holding out family {family!r}")
    return Split(
        root=manifest.root, classes=manifest.classes, train=sides["train"], val=sides["val"], test=sides["test"],
        n_clusters=len({cluster_of[i.sha256] for i in items}),
        fingerprint=_sides_fingerprint(sides, "holdout", family), left_out=left_out,
    )


def labels_of(items: list[Item], classes: list[str]) -> np.ndarray:
    index = {c: k for k, c in enumerate(classes)}
    return np.array([index[i.label] for i in items], dtype=np.int64)
