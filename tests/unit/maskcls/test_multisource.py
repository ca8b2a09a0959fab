"""maskcls.multisource: sources of several parts, PASCAL VOC crops, and the groups the split keeps whole."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls.config import Settings, load_config
from maskcls.data import source_group, split, validate
from maskcls.multisource import (
    crop_box,
    fetch_sources,
    parse_part,
    read_voc_boxes,
    resolve_parts,
    split_sources,
    training_source,
    voc_crops,
)
from maskcls.names import classifier_model_name, scanner_model_name
from maskcls.source import SourceError

THREE = ["mask_weared_incorrect", "with_mask", "without_mask"]


def photo(seed: int, w: int = 40, h: int = 40) -> np.ndarray:
    """A distinct random colour photo (random noise: no two are near-duplicates)."""
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def write_image(path: Path, pixels: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    ok, buf = cv2.imencode(path.suffix, pixels)
    assert ok
    path.write_bytes(buf.tobytes())
    return path


def class_folders(root: Path, files: dict[str, int]) -> Path:
    """``{"with_mask/a.png": seed}`` -> a folder of class folders of random photos."""
    for rel, seed in files.items():
        write_image(root / rel, photo(seed))
    return root


def voc_xml(name: str, boxes: list[tuple[str, int, int, int, int]], extra: str = "") -> str:
    objects = "".join(
        f"<object>{extra}<name>{label}</name><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>"
        f"<xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox></object>"
        for label, x0, y0, x1, y1 in boxes
    )
    return f"<annotation><filename>{name}</filename>{objects}</annotation>"


def voc_folder(root: Path, photos: dict[str, tuple[np.ndarray, list, str]]) -> Path:
    """``{stem: (pixels, boxes, part)}`` -> images/, annotations/ and splits.csv."""
    rows = ["image,part"]
    for stem, (pixels, boxes, part) in photos.items():
        write_image(root / "images" / f"{stem}.png", pixels)
        (root / "annotations").mkdir(parents=True, exist_ok=True)
        (root / "annotations" / f"{stem}.xml").write_text(voc_xml(f"{stem}.png", boxes, extra="\n stray "))
        rows.append(f"{stem}.png,{part}")
    (root / "splits.csv").write_text("\n".join(rows) + "\n")
    return root


# --------------------------------------------------------------------------- parsing


def test_parts_split_at_commas_from_strings_and_lists() -> None:
    assert split_sources("a, b ,,c") == ["a", "b", "c"]
    assert split_sources(["a,b", " c "]) == ["a", "b", "c"]
    assert split_sources(None) == [] and split_sources("") == []


def test_a_part_carries_its_options_and_a_urls_own_query_is_kept() -> None:
    p = parse_part("voc:/data/scenes?part=tune&margin=0.3")
    assert (p.voc, p.location, p.part, p.margin, p.plain) == (True, "/data/scenes", "tune", 0.3, False)
    assert parse_part("/data/x?group=person").group == "person"
    url = parse_part("https://example.org/d.zip?token=abc")
    assert url.location == "https://example.org/d.zip?token=abc" and url.plain


@pytest.mark.parametrize("text, says", [
    ("/data/x?colour=red", "unknown option 'colour'"),
    ("/data/x?part=tune", "voc: parts only"),
    ("voc:/data/x?margin=big", "margin='big'"),
    ("/data/x?group=family", "group='family'"),
    ("voc:?part=tune", "names no folder"),
])
def test_a_bad_part_is_an_error_naming_it(text: str, says: str) -> None:
    with pytest.raises(SourceError) as err:
        parse_part(text)
    assert text in err.value.message and says in err.value.message


def test_comma_list_from_the_environment_and_the_order_of_choice(tmp_path: Path) -> None:
    settings = Settings.from_env({"MASKCLS_DATA_SOURCE": "/d/a, voc:/d/scenes?part=tune"})
    assert training_source(None, [], tmp_path, settings.data_source) == ["/d/a", "voc:/d/scenes?part=tune"]
    # --source wins over everything; the profile's own list over MASKCLS_DATA_SOURCE
    assert training_source(["/x", "/y"], ["p"], tmp_path, settings.data_source) == ["/x", "/y"]
    profile = load_config("three-class").sources
    chosen = training_source(None, profile, tmp_path / "shared", settings.data_source)
    assert chosen == [f"{tmp_path}/shared/face-mask", f"voc:{tmp_path}/shared/face-mask-scenes?part=tune",
                      f"{tmp_path}/shared/face-mask-incorrect?group=person"]
    assert resolve_parts(["/abs", "https://h/x.zip"], tmp_path) == ["/abs", "https://h/x.zip"]


# --------------------------------------------------------------------------- VOC crops


def test_a_box_grows_by_its_margin_and_is_clipped_to_the_photo() -> None:
    # 20x10 box, margin 0.25: 5 px left/right, 2.5 -> 3 px (outwards) top/bottom
    assert crop_box(100, 100, (40, 40, 60, 50), 0.25) == (35, 37, 65, 53)
    assert crop_box(100, 100, (40, 40, 60, 50), 0.0) == (40, 40, 60, 50)
    # at the border: clipped, never negative, never past the photo
    assert crop_box(50, 30, (0, 0, 20, 20), 0.5) == (0, 0, 30, 30)
    assert crop_box(50, 30, (40, 20, 50, 30), 0.5) == (35, 15, 50, 30)
    # empty, inverted or wholly outside: nothing to cut
    assert crop_box(50, 30, (10, 10, 10, 20), 0.2) is None
    assert crop_box(50, 30, (60, 40, 70, 50), 0.1) is None


def test_voc_crops_cut_each_box_with_its_class_and_skip_report_photos(tmp_path: Path) -> None:
    pixels = photo(1, w=100, h=60)
    folder = voc_folder(tmp_path / "scenes", {
        "s1": (pixels, [("with_mask", 10, 10, 30, 30), ("mask_weared_incorrect", 80, 40, 100, 60)], "tune"),
        "s2": (photo(2), [("without_mask", 0, 0, 20, 20)], "report"),
    })
    crops = voc_crops(folder, "tune", 0.5)
    assert [(c.photo, c.index, c.label) for c in crops] == [("s1", 0, "with_mask"), ("s1", 1, "mask_weared_incorrect")]
    first = cv2.imdecode(np.frombuffer(crops[0].data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(first, pixels[0:40, 0:40])  # 20x20 box + 10 px each side, clipped at 0
    second = cv2.imdecode(np.frombuffer(crops[1].data, np.uint8), cv2.IMREAD_COLOR)
    assert np.array_equal(second, pixels[30:60, 70:100])  # clipped at the right and bottom edges
    assert {c.photo for c in voc_crops(folder, None, 0.0)} == {"s1", "s2"}
    with pytest.raises(SourceError, match="no photo in part 'val'"):
        voc_crops(folder, "val", 0.2)


def test_a_bad_annotation_is_an_error_naming_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.xml"
    bad.write_text("<annotation><object><name>with_mask</name>")
    with pytest.raises(SourceError) as err:
        read_voc_boxes(bad)
    assert str(bad) in err.value.message and "cannot be read as XML" in err.value.message
    nums = tmp_path / "nums.xml"
    nums.write_text(voc_xml("x.png", [("with_mask", 1, 2, 3, 4)]).replace("<xmax>3</xmax>", "<xmax>wide</xmax>"))
    with pytest.raises(SourceError, match="nums.xml.*four numbers"):
        read_voc_boxes(nums)
    # stray text inside an <object>, as real files have, is fine
    ok = tmp_path / "ok.xml"
    ok.write_text(voc_xml("x.png", [("with_mask", 1, 2, 30, 40)], extra="junk"))
    assert read_voc_boxes(ok) == ("x.png", [("with_mask", (1.0, 2.0, 30.0, 40.0))])


# --------------------------------------------------------------------------- composition


def test_two_folder_parts_become_one_folder_with_the_union_of_their_classes(tmp_path: Path) -> None:
    a = class_folders(tmp_path / "a", {"with_mask/x.png": 1, "without_mask/x.png": 2})
    b = class_folders(tmp_path / "b", {"with_mask/x.png": 3, "mask_weared_incorrect/y.png": 4})
    (b / "SOURCE.md").write_text("# b\nLicence: CC BY-NC-SA 4.0 (non-commercial use).\n")
    raw = fetch_sources([str(a), str(b)], tmp_path / "dl", crop_margin=0.2, progress=False)
    root = Path(raw.root)
    assert raw.kind == "multi" and root.is_relative_to(tmp_path / "dl")
    assert sorted(p.name for p in root.iterdir()) == THREE
    # same file name in two parts: both kept, told apart by the part's tag
    assert sorted(p.name for p in (root / "with_mask").iterdir()) == ["a~~x.png", "b~~x.png"]
    assert raw.licences == ["CC BY-NC-SA 4.0"] and [p.root for p in raw.parts] == [str(a), str(b)]
    # the same parts again: the same folder, reused
    again = fetch_sources(f"{a},{b}", tmp_path / "dl", crop_margin=0.2, progress=False)
    assert again.root == raw.root and again.fingerprint == raw.fingerprint
    # a changed part: a new identity and folder
    write_image(b / "with_mask" / "z.png", photo(5))
    changed = fetch_sources([str(a), str(b)], tmp_path / "dl", crop_margin=0.2, progress=False)
    assert changed.fingerprint != raw.fingerprint and (Path(changed.root) / "with_mask" / "b~~z.png").is_file()


def test_one_plain_part_is_read_as_before(tmp_path: Path) -> None:
    a = class_folders(tmp_path / "a", {"with_mask/x.png": 1, "without_mask/x.png": 2})
    raw = fetch_sources([str(a)], tmp_path / "dl", crop_margin=0.2, progress=False)
    assert (raw.kind, raw.root, raw.licences) == ("folder", str(a.resolve()), [])


def test_a_voc_part_is_cut_into_class_folders_grouped_by_photo(tmp_path: Path) -> None:
    a = class_folders(tmp_path / "faces", {"with_mask/x.png": 1, "without_mask/x.png": 2})
    scenes = voc_folder(tmp_path / "scenes", {
        "s1": (photo(10, 80, 80), [("with_mask", 0, 0, 40, 40), ("without_mask", 40, 40, 80, 80)], "tune"),
        "s2": (photo(11, 80, 80), [("with_mask", 0, 0, 40, 40)], "report"),
    })
    raw = fetch_sources([str(a), f"voc:{scenes}?part=tune"], tmp_path / "dl", crop_margin=0.0, progress=False)
    root = Path(raw.root)
    crops = sorted(p.relative_to(root).as_posix() for p in root.rglob("scenes-tune~*"))
    assert crops == ["with_mask/scenes-tune~s1~s1_000.png", "without_mask/scenes-tune~s1~s1_001.png"]
    assert {source_group(c) for c in crops} == {"scenes-tune~s1"}
    assert source_group("with_mask/faces~~x.png") is None and source_group("with_mask/0_0_0 copy 1.jpg") is None
    # another margin is another source
    wider = fetch_sources([str(a), f"voc:{scenes}?part=tune"], tmp_path / "dl", crop_margin=0.2, progress=False)
    assert wider.root != raw.root


@pytest.mark.parametrize("part, says", [
    ("{tmp}/missing", "does not exist"),
    ("voc:{tmp}/missing", "is not a folder"),
    ("voc:{tmp}/faces", "needs images/ and annotations/"),
    ("{tmp}/unnumbered?group=person", "does not start with a number"),
])
def test_a_bad_part_of_several_is_an_error_naming_it(tmp_path: Path, part: str, says: str) -> None:
    class_folders(tmp_path / "faces", {"with_mask/x.png": 1, "without_mask/x.png": 2})
    class_folders(tmp_path / "unnumbered", {"with_mask/x.png": 3, "without_mask/y.png": 4})
    text = part.format(tmp=tmp_path)
    with pytest.raises(SourceError) as err:
        fetch_sources([str(tmp_path / "faces"), text], tmp_path / "dl", crop_margin=0.2, progress=False)
    assert text.split("?")[0].removeprefix("voc:") in err.value.message and says in err.value.message
    assert not list((tmp_path / "dl").glob("composed/*"))  # nothing half-written left to trust


# --------------------------------------------------------------------------- grouping in the split


def test_a_scene_photos_faces_and_a_persons_files_stay_on_one_side(tmp_path: Path) -> None:
    faces = class_folders(tmp_path / "faces", {f"{c}/{c}{k}.png": 100 * n + k
                                               for n, c in enumerate(("with_mask", "without_mask"))
                                               for k in range(30)})
    people = class_folders(tmp_path / "people", {
        f"{c}/{person:05d}_Mask_{k}.png": 1000 + 10 * person + 5 * n + k
        for person in range(20) for n, c in enumerate(("mask_weared_incorrect", "with_mask")) for k in range(2)
    })
    scenes = voc_folder(tmp_path / "scenes", {
        f"s{k}": (photo(5000 + k, 120, 40),
                  [("with_mask", 0, 0, 40, 40), ("without_mask", 40, 0, 80, 40), ("mask_weared_incorrect", 80, 0, 120, 40)],
                  "tune")
        for k in range(20)
    })
    raw = fetch_sources([str(faces), f"{people}?group=person", f"voc:{scenes}?part=tune"], tmp_path / "dl",
                        crop_margin=0.0, progress=False)
    cfg = load_config("smoke", {"data.max_images": None}).data
    manifest = validate(Path(raw.root), cfg)
    assert manifest.classes == THREE and len(manifest.items) == 60 + 80 + 60
    result = split(manifest, cfg)
    sides_of: dict[str, set[str]] = defaultdict(set)
    for side in ("train", "val", "test"):
        for item in result.side(side):
            if (group := source_group(item.path)) is not None:
                sides_of[group].add(side)
    assert len([g for g in sides_of if g.startswith("scenes-tune~")]) == 20
    assert len([g for g in sides_of if g.startswith("people~")]) == 20
    assert all(len(s) == 1 for s in sides_of.values()), sides_of
    # the groups are spread over the sides, not all lumped into one
    assert len({next(iter(s)) for s in sides_of.values()}) >= 2


# --------------------------------------------------------------------------- names


def test_the_registered_name_follows_the_class_set() -> None:
    assert classifier_model_name(["without_mask", "with_mask"]) == "face-mask-classifier"
    assert classifier_model_name(list(reversed(THREE))) == "face-mask-classifier-3class"
    assert scanner_model_name(THREE) == "face-mask-scanner-3class"
    assert scanner_model_name(["with_mask", "without_mask"]) == "face-mask-scanner"
    # another pair of classes never competes with the mask classifier
    assert classifier_model_name(["cat", "dog"]) == "face-mask-classifier-cat-dog"
    assert scanner_model_name(["cat", "dog"]) == "face-mask-scanner-cat-dog"
