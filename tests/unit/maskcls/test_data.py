"""maskcls.data: scan, validate, fingerprint, near-duplicate clusters, split, subset, labels."""

from __future__ import annotations

import hashlib
import re
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.config import DataConfig
from maskcls.data import (
    DataError,
    Item,
    Manifest,
    cluster,
    labels_of,
    scan,
    split,
    subset,
    validate,
)

CLASSES = ("with_mask", "without_mask")

# --- synthetic images ---------------------------------------------------------------------


def smooth_image(rng: np.random.Generator, side: int = 40, channels: int = 3) -> np.ndarray:
    """A random but smooth image: distinct ones are far apart in perceptual hash."""
    base = rng.integers(0, 256, size=(8, 8, channels)).astype(np.float32)
    img = cv2.resize(base, (side, side), interpolation=cv2.INTER_LINEAR)
    img = np.clip(img, 0, 255).astype(np.uint8)
    return img if channels > 1 else img.reshape(side, side)


def noisy(img: np.ndarray, rng: np.random.Generator, sigma: float = 2.0) -> np.ndarray:
    return np.clip(img.astype(np.float32) + rng.normal(0, sigma, img.shape), 0, 255).astype(np.uint8)


def encode(img: np.ndarray, ext: str = ".png") -> bytes:
    ok, buf = cv2.imencode(ext, img)
    assert ok
    return buf.tobytes()


def write(path: Path, data: bytes | np.ndarray, ext: str | None = None) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, np.ndarray):
        data = encode(data, ext or path.suffix)
    path.write_bytes(data)
    return path


def make_classes(root: Path, n_per_class: int, seed: int = 0, classes=CLASSES, prefix: str = "img") -> dict[str, str]:
    """n distinct smooth PNGs per class; returns {relative path: class}."""
    rng = np.random.default_rng(seed)
    out = {}
    for c in classes:
        for k in range(n_per_class):
            rel = f"{c}/{prefix}{k:03d}.png"
            write(root / rel, smooth_image(rng))
            out[rel] = c
    return out


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def reason_of(manifest: Manifest, rel: str) -> str:
    found = [s.reason for s in manifest.skipped if s.path == rel]
    assert found, f"{rel} was not skipped; skipped: {[s.path for s in manifest.skipped]}"
    return found[0]


def kept_paths(manifest: Manifest) -> set[str]:
    return {i.path for i in manifest.items}


# --- scan -----------------------------------------------------------------------------------


def test_scan_keeps_class_folder_images_and_explains_the_rest(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    write(tmp_path / "b_class/one.png", smooth_image(rng))
    write(tmp_path / "a_class/two.JPG", smooth_image(rng), ".jpg")
    write(tmp_path / "a_class/notes.txt", b"hello")
    write(tmp_path / "a_class/noext", b"hello")
    write(tmp_path / "a_class/.DS_Store", b"\0\0")
    write(tmp_path / ".cache/x/y.png", smooth_image(rng))
    write(tmp_path / "__MACOSX/a_class/._two.JPG", b"junk")
    write(tmp_path / "loose.png", smooth_image(rng))
    write(tmp_path / "a_class/deeper/three.png", smooth_image(rng))
    (tmp_path / "empty_class").mkdir()

    candidates, skipped = scan(tmp_path)
    assert sorted(candidates) == [("a_class/two.JPG", "a_class"), ("b_class/one.png", "b_class")]
    reasons = {s.path: s.reason for s in skipped}
    assert set(reasons) == {
        "a_class/notes.txt",
        "a_class/noext",
        "a_class/.DS_Store",
        ".cache/x/y.png",
        "__MACOSX/a_class/._two.JPG",
        "loose.png",
        "a_class/deeper/three.png",
    }
    assert "hidden" in reasons["a_class/.DS_Store"]
    assert "hidden" in reasons[".cache/x/y.png"]
    assert "hidden" in reasons["__MACOSX/a_class/._two.JPG"]
    assert ".txt" in reasons["a_class/notes.txt"] and "unsupported" in reasons["a_class/notes.txt"]
    assert "unsupported" in reasons["a_class/noext"]
    assert "outside" in reasons["loose.png"]
    assert "nested" in reasons["a_class/deeper/three.png"]


def test_scan_of_a_missing_folder_is_a_data_error_naming_it(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="nowhere"):
        scan(tmp_path / "nowhere")


# --- validate: what is skipped and what is kept ---------------------------------------------


@pytest.fixture(scope="module")
def messy(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, DataConfig]:
    root = tmp_path_factory.mktemp("messy")
    make_classes(root, 5, seed=1)
    rng = np.random.default_rng(2)
    a, b = CLASSES
    good_jpeg = encode(smooth_image(rng), ".jpg")
    write(root / f"{a}/zero.jpg", b"")
    write(root / f"{a}/text.jpg", b"this is not a picture, just some words\n" * 10)
    write(root / f"{b}/page.png", b"<!DOCTYPE html><html><body>404 Not Found</body></html>")
    write(root / f"{b}/truncated.jpg", good_jpeg[: len(good_jpeg) // 2])
    write(root / f"{a}/readme.txt", b"notes")
    write(root / f"{a}/.hidden.png", smooth_image(rng))
    write(root / "outside.png", smooth_image(rng))
    write(root / f"{b}/sub/nested.png", smooth_image(rng))
    write(root / f"{a}/tiny.png", smooth_image(rng, side=10))
    write(root / f"{b}/wide_but_short.png", cv2.resize(smooth_image(rng), (40, 12)))
    write(root / f"{b}/huge.png", smooth_image(rng, side=60))  # 3600 px > max_pixels below
    # Unusual but valid images.
    rgba = np.dstack([smooth_image(rng), np.full((40, 40), 128, np.uint8)])
    write(root / f"{a}/rgba.png", rgba)
    write(root / f"{a}/deep16.png", (smooth_image(rng).astype(np.uint16) * 257))
    write(root / f"{b}/gray.png", smooth_image(rng, channels=1))
    write(root / f"{b}/photo.jpeg", good_jpeg)
    write(root / f"{b}/bitmap.bmp", smooth_image(rng), ".bmp")
    write(root / f"{b}/rect.png", cv2.resize(smooth_image(rng), (30, 20)))
    write(root / f"{a}/máscara ñandú.png", smooth_image(rng))
    write(root / f"{a}/with space.png", smooth_image(rng))
    cfg = DataConfig(max_pixels=50 * 50, min_side=16)
    return root, validate(root, cfg), cfg


@pytest.mark.parametrize(
    "rel, pattern",
    [
        ("with_mask/zero.jpg", r"empty"),
        ("with_mask/text.jpg", r"not an image|decode"),
        ("without_mask/page.png", r"not an image|decode"),
        ("without_mask/truncated.jpg", r"not an image|decode|truncated|incomplete"),
        ("with_mask/readme.txt", r"unsupported.*\.txt"),
        ("with_mask/.hidden.png", r"hidden"),
        ("outside.png", r"outside"),
        ("without_mask/sub/nested.png", r"nested"),
        ("with_mask/tiny.png", r"10x10.*min.?side|smaller"),
        ("without_mask/wide_but_short.png", r"40x12.*min.?side|smaller"),
        ("without_mask/huge.png", r"60x60.*(max_pixels|exceeds)"),
    ],
)
def test_validate_skips_bad_files_with_a_reason(messy, rel: str, pattern: str) -> None:
    _, manifest, _ = messy
    assert rel not in kept_paths(manifest)
    reason = reason_of(manifest, rel)
    assert reason.strip()
    assert re.search(pattern, reason, flags=re.IGNORECASE), reason


@pytest.mark.parametrize(
    "rel, size",
    [
        ("with_mask/rgba.png", (40, 40)),
        ("with_mask/deep16.png", (40, 40)),
        ("without_mask/gray.png", (40, 40)),
        ("without_mask/photo.jpeg", (40, 40)),
        ("without_mask/bitmap.bmp", (40, 40)),
        ("without_mask/rect.png", (30, 20)),
        ("with_mask/máscara ñandú.png", (40, 40)),
        ("with_mask/with space.png", (40, 40)),
    ],
)
def test_validate_keeps_unusual_but_valid_images(messy, rel: str, size: tuple[int, int]) -> None:
    root, manifest, _ = messy
    items = {i.path: i for i in manifest.items}
    assert rel in items, [s for s in manifest.skipped if s.path == rel]
    item = items[rel]
    assert (item.width, item.height) == size
    assert item.label == rel.split("/")[0]
    assert item.sha256 == sha(root / rel)


def test_an_image_pil_calls_a_bomb_is_rejected_from_its_header_without_decoding(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maskcls.data as data_module
    from PIL import Image

    # Scale PIL's bomb limit down so a 60x60 image plays the part of a >179-Mpx one (error at > 2 x 1000 px).
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    decoded: list[int] = []
    real_decode = data_module.decode_image
    monkeypatch.setattr(data_module, "decode_image", lambda data: decoded.append(len(data)) or real_decode(data))
    make_classes(tmp_path, 4)  # 40x40 = 1600 px: within both limits below
    write(tmp_path / f"{CLASSES[0]}/bomb.png", smooth_image(np.random.default_rng(3), side=60))
    manifest = validate(tmp_path, DataConfig(max_pixels=2500))
    assert re.search(r"exceeds|max_pixels|bomb|too large", reason_of(manifest, f"{CLASSES[0]}/bomb.png"), re.I)
    assert len(decoded) == 8, "the oversized image was decoded before it was rejected"


def test_validate_accounts_for_every_file_exactly_once(messy) -> None:
    root, manifest, _ = messy
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    kept = kept_paths(manifest)
    skipped = [s.path for s in manifest.skipped]
    dups = [d for d, _ in manifest.duplicates]
    assert len(skipped) == len(set(skipped))
    assert kept.isdisjoint(skipped)
    assert kept | set(skipped) | set(dups) == on_disk
    assert manifest.classes == sorted(CLASSES)
    assert manifest.counts == dict(Counter(i.label for i in manifest.items))
    assert sum(manifest.counts.values()) == len(manifest.items)
    report = manifest.report()
    assert report["kept"] == len(manifest.items)
    assert report["fingerprint"] == manifest.fingerprint


def test_validate_reports_progress_up_to_the_total(tmp_path: Path) -> None:
    make_classes(tmp_path, 4)
    calls: list[tuple[int, int]] = []
    validate(tmp_path, DataConfig(), progress=lambda n, total: calls.append((n, total)))
    assert calls and calls[-1] == (8, 8)


def test_validate_gives_the_same_manifest_and_progress_on_one_thread_and_on_several(
    messy, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import maskcls.parallel

    # The messy folder (bad files of every kind), exact copies, bytes in two classes, and enough
    # images for progress calls and many small chunks (two items per worker).
    root = tmp_path / "ds"
    shutil.copytree(messy[0], root)
    make_classes(root, 140, seed=7, prefix="more")
    a, b = CLASSES
    shutil.copy(root / f"{a}/more001.png", root / f"{a}/copy_of_more001.png")
    shutil.copy(root / f"{a}/more002.png", root / f"{b}/ambiguous.png")
    monkeypatch.setattr(maskcls.parallel, "CHUNK_PER_WORKER", 2)
    cfg = messy[2]
    one_calls: list[tuple[int, int]] = []
    three_calls: list[tuple[int, int]] = []
    one = validate(root, cfg, progress=lambda n, t: one_calls.append((n, t)), workers=1)
    three = validate(root, cfg, progress=lambda n, t: three_calls.append((n, t)), workers=3)
    assert three == one
    assert three.model_dump_json() == one.model_dump_json()
    assert three_calls == one_calls and one_calls[-1][0] == one_calls[-1][1] > 250
    reasons = {s.path: s.reason for s in one.skipped}
    assert f"{b}/ambiguous.png" in reasons and f"{a}/more002.png" in reasons
    assert dict(one.duplicates) == {f"{a}/more001.png": f"{a}/copy_of_more001.png"}
    assert "truncated" in reasons[f"{b}/truncated.jpg"].lower() or "decode" in reasons[f"{b}/truncated.jpg"]


def test_exact_duplicates_are_kept_once_and_listed(tmp_path: Path) -> None:
    make_classes(tmp_path, 4)
    a = CLASSES[0]
    original = tmp_path / f"{a}/img001.png"
    shutil.copy(original, tmp_path / f"{a}/zz_copy.png")
    shutil.copy(original, tmp_path / f"{a}/aa_copy.png")
    manifest = validate(tmp_path, DataConfig())
    same = [i for i in manifest.items if i.sha256 == sha(original)]
    assert len(same) == 1
    kept = same[0].path
    assert kept == min(f"{a}/img001.png", f"{a}/zz_copy.png", f"{a}/aa_copy.png")
    listed = dict(manifest.duplicates)
    assert set(listed) == {f"{a}/img001.png", f"{a}/zz_copy.png", f"{a}/aa_copy.png"} - {kept}
    assert all(v == kept for v in listed.values())
    assert len(manifest.items) == 8
    assert manifest.counts == {a: 4, CLASSES[1]: 4}


def test_same_bytes_in_two_classes_are_skipped_everywhere(tmp_path: Path) -> None:
    make_classes(tmp_path, 4)
    a, b = CLASSES
    shutil.copy(tmp_path / f"{a}/img000.png", tmp_path / f"{b}/ambiguous.png")
    manifest = validate(tmp_path, DataConfig(min_per_class=3))
    digest = sha(tmp_path / f"{a}/img000.png")
    assert all(i.sha256 != digest for i in manifest.items)
    for rel in (f"{a}/img000.png", f"{b}/ambiguous.png"):
        reason = reason_of(manifest, rel)
        assert a in reason and b in reason


def test_fewer_than_two_classes_is_a_data_error_naming_the_folder(tmp_path: Path) -> None:
    root = tmp_path / "only_one_class"
    make_classes(root, 6, classes=("with_mask",))
    with pytest.raises(DataError) as exc:
        validate(root, DataConfig())
    assert str(root) in str(exc.value)


def test_two_folders_but_one_without_valid_images_is_a_data_error(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, 6, classes=("with_mask",))
    write(root / "without_mask/broken.jpg", b"")
    with pytest.raises(DataError) as exc:
        validate(root, DataConfig())
    assert str(root) in str(exc.value)


def test_a_folder_of_loose_images_is_a_data_error(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for k in range(6):
        write(tmp_path / f"loose{k}.png", smooth_image(rng))
    with pytest.raises(DataError, match=str(tmp_path)):
        validate(tmp_path, DataConfig())


def test_class_below_min_per_class_is_a_data_error_naming_it(tmp_path: Path) -> None:
    make_classes(tmp_path, 6, classes=("masked", "unmasked"))
    make_classes(tmp_path, 2, seed=5, classes=("rare_class",))
    with pytest.raises(DataError) as exc:
        validate(tmp_path, DataConfig(min_per_class=4))
    msg = str(exc.value)
    assert "rare_class" in msg
    assert "'masked'" not in msg and "'unmasked'" not in msg
    # The same data with a lower minimum is fine.
    assert validate(tmp_path, DataConfig(min_per_class=2)).counts == {"masked": 6, "rare_class": 2, "unmasked": 6}


def test_invalid_images_do_not_count_towards_min_per_class(tmp_path: Path) -> None:
    make_classes(tmp_path, 5)
    for k in range(3):
        write(tmp_path / f"{CLASSES[1]}/bad{k}.jpg", b"nope")
    for k in range(2, 5):
        (tmp_path / f"{CLASSES[1]}/img{k:03d}.png").unlink()
    with pytest.raises(DataError, match=CLASSES[1]):
        validate(tmp_path, DataConfig(min_per_class=3))


# --- fingerprint ----------------------------------------------------------------------------


def test_fingerprint_follows_image_content_only(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    make_classes(root, 4)
    fp0 = validate(root, DataConfig(min_per_class=2)).fingerprint

    # Unrelated non-image files (and hidden ones) do not matter.
    write(root / "README.txt", b"about this dataset")
    write(root / f"{CLASSES[0]}/notes.txt", b"notes")
    write(root / f"{CLASSES[0]}/.DS_Store", b"\0")
    assert validate(root, DataConfig(min_per_class=2)).fingerprint == fp0

    # Nor does where the folder lives.
    moved = tmp_path / "elsewhere"
    shutil.copytree(root, moved)
    assert validate(moved, DataConfig(min_per_class=2)).fingerprint == fp0

    # Changing one image's bytes does.
    target = root / f"{CLASSES[1]}/img002.png"
    write(target, smooth_image(np.random.default_rng(99)))
    fp1 = validate(root, DataConfig(min_per_class=2)).fingerprint
    assert fp1 != fp0

    # So do renaming an image and moving it to another class.
    target.rename(root / f"{CLASSES[1]}/renamed.png")
    fp2 = validate(root, DataConfig(min_per_class=2)).fingerprint
    assert fp2 not in (fp0, fp1)
    (root / f"{CLASSES[1]}/renamed.png").rename(root / f"{CLASSES[0]}/renamed.png")
    assert validate(root, DataConfig(min_per_class=2)).fingerprint not in (fp0, fp1, fp2)


def test_fingerprint_changes_when_a_single_byte_changes(tmp_path: Path) -> None:
    make_classes(tmp_path, 4)
    fp0 = validate(tmp_path, DataConfig()).fingerprint
    target = tmp_path / f"{CLASSES[0]}/img000.png"
    # Append a byte after the PNG end: still the same picture, but different bytes.
    target.write_bytes(target.read_bytes() + b"\0")
    manifest = validate(tmp_path, DataConfig())
    assert f"{CLASSES[0]}/img000.png" in kept_paths(manifest)
    assert manifest.fingerprint != fp0


# --- near-duplicate clusters ------------------------------------------------------------------


def _item(path: str, phash: int, mirror: int, label: str = "a") -> Item:
    return Item(
        path=path,
        label=label,
        sha256=hashlib.sha256(path.encode()).hexdigest(),
        phash=phash,
        phash_mirror=mirror,
        width=20,
        height=20,
    )


def _groups(labels: list[int]) -> set[frozenset[int]]:
    by: dict[int, set[int]] = {}
    for idx, g in enumerate(labels):
        by.setdefault(g, set()).add(idx)
    return {frozenset(v) for v in by.values()}


def _bits(*positions: int) -> int:
    return sum(1 << p for p in positions)


FAR = (1 << 64) - 1  # all ones: 64 bits from zero


def test_cluster_on_hand_made_hashes_uses_threshold_and_is_transitive() -> None:
    items = [
        _item("a", 0, FAR),
        _item("b", _bits(0, 1, 2, 3, 4), FAR),  # 5 from a
        _item("c", _bits(0, 1, 2, 3, 4, 10, 11, 12, 13, 14), FAR),  # 5 from b, 10 from a
        _item("d", _bits(*range(40, 60)), FAR),  # far from all
    ]
    assert _groups(cluster(items, 6)) == {frozenset({0, 1, 2}), frozenset({3})}
    assert _groups(cluster(items, 4)) == {frozenset({0}), frozenset({1}), frozenset({2}), frozenset({3})}
    assert _groups(cluster(items, 5)) == {frozenset({0, 1, 2}), frozenset({3})}
    assert cluster([], 6) == []


def test_cluster_groups_an_item_whose_mirror_hash_matches() -> None:
    p, q = _bits(*range(0, 32)), _bits(*range(32, 64))
    items = [_item("orig", p, q), _item("mirrored", q, p), _item("other", _bits(*range(16, 48)), 0)]
    assert _groups(cluster(items, 3)) == {frozenset({0, 1}), frozenset({2})}


def test_cluster_mirror_match_does_not_depend_on_item_order() -> None:
    p = _bits(*range(0, 32))
    # "late"'s mirror hash equals "early"'s hash; the other pairings are far apart.
    early = _item("early", p, _bits(*range(8, 40)))
    late = _item("late", _bits(*range(24, 56)), p)
    other_order = [late, early]
    assert _groups(cluster([early, late], 2)) == {frozenset({0, 1})}
    assert _groups(cluster(other_order, 2)) == {frozenset({0, 1})}


def test_cluster_groups_an_image_with_its_mirror_and_a_noisy_copy_not_a_different_one(tmp_path: Path) -> None:
    rng = np.random.default_rng(11)
    base = smooth_image(rng)
    a = CLASSES[0]
    write(tmp_path / f"{a}/base.png", base)
    write(tmp_path / f"{a}/mirror.png", np.ascontiguousarray(base[:, ::-1]))
    write(tmp_path / f"{a}/noisy.png", noisy(base, rng))
    write(tmp_path / f"{a}/recompressed.jpg", base, ".jpg")
    write(tmp_path / f"{a}/different.png", smooth_image(rng))
    make_classes(tmp_path, 4, seed=12, classes=(CLASSES[1],))
    manifest = validate(tmp_path, DataConfig())
    items = manifest.items
    assert len(items) == 9
    groups = cluster(items, DataConfig().phash_threshold)
    by_path = {i.path: g for i, g in zip(items, groups)}
    family = {by_path[f"{a}/{n}"] for n in ("base.png", "mirror.png", "noisy.png", "recompressed.jpg")}
    assert len(family) == 1
    assert by_path[f"{a}/different.png"] not in family
    # The four other-class images are unrelated: each its own cluster.
    assert len(set(groups)) == 1 + 1 + 4


# --- split ------------------------------------------------------------------------------------

N_FAMILIES = 36  # per class


def build_families(root: Path, seed: int, n_families: int = N_FAMILIES, start: int = 0) -> dict[str, str]:
    """Per class, families of near-duplicates (original, mirror, noisy copy for some); path -> family."""
    rng = np.random.default_rng(seed)
    family: dict[str, str] = {}
    for c in CLASSES:
        for k in range(start, start + n_families):
            fam = f"{c}/f{k:03d}"
            img = smooth_image(rng)
            members = {"orig": img}
            if k % 3 == 0:
                members["mirror"] = np.ascontiguousarray(img[:, ::-1])
            if k % 4 == 0:
                members["noisy"] = noisy(img, rng)
            for name, pixels in members.items():
                rel = f"{fam}_{name}.png"
                write(root / rel, pixels)
                family[rel] = fam
    return family


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Manifest]:
    root = tmp_path_factory.mktemp("families")
    fam = build_families(root, seed=21)
    return root, fam, validate(root, DataConfig())


def side_of(s) -> dict[str, str]:
    return {i.path: name for name in ("train", "val", "test") for i in s.side(name)}


def test_split_sides_are_disjoint_and_cover_every_item(families) -> None:
    _, _, manifest = families
    s = split(manifest, DataConfig())
    paths = [i.path for name in ("train", "val", "test") for i in s.side(name)]
    assert len(paths) == len(set(paths))
    assert set(paths) == kept_paths(manifest)
    assert s.classes == manifest.classes
    for name in ("train", "test"):
        assert {i.label for i in s.side(name)} == set(CLASSES)
    counts = s.counts()
    assert sum(sum(v.values()) for v in counts.values()) == len(manifest.items)
    assert counts["test"] == dict(Counter(i.label for i in s.test))


def test_split_fractions_are_roughly_as_configured(families) -> None:
    _, fam, manifest = families
    s = split(manifest, DataConfig(test_fraction=0.3, val_fraction=0.2))
    n_families = len(set(fam.values()))
    test_fams = {fam[i.path] for i in s.test}
    val_fams = {fam[i.path] for i in s.val}
    # Binomial(72, 0.3) and Binomial(~50, 0.2): generous bounds, but far from 0 or all.
    assert 0.1 * n_families < len(test_fams) < 0.5 * n_families
    assert 0.03 * n_families < len(val_fams) < 0.35 * n_families


def test_no_near_duplicate_family_spans_two_sides(families) -> None:
    _, fam, manifest = families
    for cfg in (DataConfig(), DataConfig(test_fraction=0.5, val_fraction=0.5), DataConfig(split_seed=7)):
        sides = side_of(split(manifest, cfg))
        by_family: dict[str, set[str]] = {}
        for path, side in sides.items():
            by_family.setdefault(fam[path], set()).add(side)
        spanning = {f: s for f, s in by_family.items() if len(s) > 1}
        assert not spanning, spanning
    # And split() saw the families as clusters (each multi-member family is one cluster).
    s = split(manifest, DataConfig())
    assert s.n_clusters == len(set(fam.values()))


def test_split_is_deterministic_and_depends_on_the_seed(families) -> None:
    _, _, manifest = families
    a, b = split(manifest, DataConfig()), split(manifest, DataConfig())
    assert side_of(a) == side_of(b)
    assert a.fingerprint == b.fingerprint
    c = split(manifest, DataConfig(split_seed=1))
    assert side_of(c) != side_of(a)
    assert c.fingerprint != a.fingerprint


def test_changing_val_fraction_never_changes_the_test_side(families) -> None:
    _, _, manifest = families
    tests = []
    vals = []
    for vf in (0.0, 0.1, 0.2, 0.4, 0.6):
        s = split(manifest, DataConfig(val_fraction=vf))
        tests.append({i.path for i in s.test})
        vals.append({i.path for i in s.val})
    assert all(t == tests[0] for t in tests)
    assert vals[0] == set()
    # Validation grows monotonically with its fraction (same hash, higher cut).
    assert all(vals[k] <= vals[k + 1] for k in range(len(vals) - 1))
    assert vals[-1] != vals[1]


def test_adding_new_images_never_moves_an_existing_image(tmp_path: Path) -> None:
    root = tmp_path / "ds"
    build_families(root, seed=31)
    cfg = DataConfig(val_fraction=0.2)
    before = side_of(split(validate(root, cfg), cfg))
    build_families(root, seed=32, n_families=20, start=100)  # new, unrelated photos
    after_manifest = validate(root, cfg)
    after = side_of(split(after_manifest, cfg))
    assert len(after) > len(before)
    moved = {p: (before[p], after[p]) for p in before if before[p] != after[p]}
    assert not moved
    assert {p: s for p, s in after.items() if p in before} == before


def test_split_with_too_few_clusters_for_a_test_side_is_a_data_error(tmp_path: Path) -> None:
    # Four noisy copies of one photo per class form one cluster per class: whichever
    # side it lands on, some side lacks a class.
    rng = np.random.default_rng(5)
    for c in CLASSES:
        img = smooth_image(rng)
        for k in range(4):
            write(tmp_path / f"{c}/n{k}.png", noisy(img, rng))
    manifest = validate(tmp_path, DataConfig())
    assert len(set(cluster(manifest.items, 6))) == 2
    with pytest.raises(DataError, match="side"):
        split(manifest, DataConfig())


# --- max_images -------------------------------------------------------------------------------


def test_max_images_subset_is_class_balanced_and_stable(families) -> None:
    _, _, manifest = families
    picked = {}
    for m in (10, 20, 40):
        s = split(manifest, DataConfig(max_images=m, test_fraction=0.4))
        items = s.train + s.val + s.test
        assert len(items) == m
        assert Counter(i.label for i in items) == {c: m // 2 for c in CLASSES}
        assert {i.path for i in items} <= kept_paths(manifest)
        again = split(manifest, DataConfig(max_images=m, test_fraction=0.4))
        assert side_of(again) == side_of(s)
        picked[m] = {i.path for i in items}
    # A larger budget keeps everything a smaller one picked.
    assert picked[10] <= picked[20] <= picked[40]


def test_max_images_never_moves_an_image_into_or_out_of_the_test_side(families) -> None:
    _, _, manifest = families
    full_test = {i.path for i in split(manifest, DataConfig()).test}
    for m in (20, 40, 60, 100):
        s = split(manifest, DataConfig(max_images=m))
        included = {i.path for i in s.train + s.val + s.test}
        sub_test = {i.path for i in s.test}
        flipped = sorted(p for p in included if (p in full_test) != (p in sub_test))
        assert not flipped, f"max_images={m}: {flipped}"


def test_subset_takes_all_of_a_small_class(families) -> None:
    _, _, manifest = families
    a, b = CLASSES
    lopsided = [i for i in manifest.items if i.label == b][:3] + [i for i in manifest.items if i.label == a]
    out = subset(lopsided, list(CLASSES), 20, seed=0)
    counts = Counter(i.label for i in out)
    assert counts == {b: 3, a: 10}
    assert [i.path for i in out] == sorted(i.path for i in out)


def test_max_images_above_the_total_keeps_everything(families) -> None:
    _, _, manifest = families
    s = split(manifest, DataConfig(max_images=10_000))
    assert len(s.train) + len(s.val) + len(s.test) == len(manifest.items)


# --- labels_of --------------------------------------------------------------------------------


def test_labels_of_indexes_classes_in_the_given_order() -> None:
    items = [_item(p, 0, 0, label=lab) for p, lab in (("1", "b"), ("2", "a"), ("3", "c"), ("4", "b"))]
    got = labels_of(items, ["a", "b", "c"])
    assert got.dtype == np.int64
    np.testing.assert_array_equal(got, [1, 0, 2, 1])
    np.testing.assert_array_equal(labels_of(items, ["c", "b", "a"]), [1, 2, 0, 1])
    with pytest.raises(KeyError):
        labels_of(items, ["a", "b"])


def test_a_presplit_source_keeps_its_train_and_test_folders(tmp_path):
    import cv2
    import numpy as np

    from maskcls.config import DataConfig
    from maskcls.data import split, validate

    rng = np.random.default_rng(7)
    for side, n in (("train", 12), ("test", 5)):
        for cls in ("with_mask", "without_mask"):
            folder = tmp_path / side / cls
            folder.mkdir(parents=True)
            for k in range(n):
                img = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
                cv2.imwrite(str(folder / f"{k}.png"), img)
    (tmp_path / "README.txt").write_text("notes")
    manifest = validate(tmp_path, DataConfig(min_per_class=2))
    assert manifest.classes == ["with_mask", "without_mask"]
    assert manifest.counts == {"with_mask": 17, "without_mask": 17}
    assert [s.path for s in manifest.skipped] == ["README.txt"]
    result = split(manifest, DataConfig(min_per_class=2, val_fraction=0.2))
    assert {i.path.split("/")[0] for i in result.test} == {"test"}
    assert len(result.test) == 10
    assert {i.path.split("/")[0] for i in result.train + result.val} == {"train"}
    assert len(result.train) + len(result.val) == 24
