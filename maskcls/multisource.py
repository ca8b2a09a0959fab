"""A data source made of several parts, and PASCAL VOC folders cut into face crops.

A source is a list of *parts* (``--source`` repeated, or comma-separated in
``MASKCLS_DATA_SOURCE``). Each part is::

    [voc:]LOCATION[?option=value&option=value]

- ``LOCATION`` is what ``maskcls.source.fetch_source`` reads (a folder of class folders,
  a zip of one, an http(s) URL of a zip); with ``voc:`` it is a local PASCAL VOC folder
  (``images/`` + ``annotations/*.xml``; every ``<object>``'s box is cut out with a margin,
  its class is the box's ``<name>``).
- options: ``part=NAME`` (``voc:`` only: keep the photos whose row in the folder's
  ``splits.csv`` says ``part`` NAME), ``margin=F`` (``voc:`` only: overrides
  ``data.crop_margin``), ``group=person`` (the number at the start of a file name is a
  person: all of one person's files go to the same side of the split), ``licence=TEXT``
  (the licence of the part's data; default: the ``Licence:`` line of a ``SOURCE.md`` in or
  just above the part's folder).

One plain part with no options is read exactly as before (its folder is the root). Any
other source is *composed*: every part's images are linked (or copied) into one folder of
class folders under the downloads area, ``composed/<key>/<class>/<tag>~<group>~<name>``, where
``tag`` names the part and ``group`` is the scene photo of a crop or the person of a file
(empty when none); ``maskcls.data`` reads the group from the name, so the split keeps a
photo's faces and a person's files on one side. The key hashes every part's text and
content fingerprint, so a changed part makes a new folder. Classes are the union of the
parts' class folders.
"""

from __future__ import annotations

import csv
import hashlib
import json
import math
import os
import re
import shutil
import tempfile
import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from maskcls.data import composed_name, scan
from maskcls.files import folder_fingerprint, is_split_root, read_regular
from maskcls.source import SourceData, SourceError, fetch_source, publish_dir

VOC_PREFIX = "voc:"
#: Options a part may carry after ``?``; a URL whose query has other keys keeps its query.
OPTIONS = ("part", "margin", "group", "licence")
GROUP_RULES = ("person",)
#: Bump when the composed folder's layout or the crops change, so old folders are not reused.
LAYOUT_VERSION = 1
_LICENCE_LINE = re.compile(r"Licen[cs]e:\s*([^;(\n]+?)\s*(?:[;(\n]|\.\s|$)", re.IGNORECASE)


@dataclass(frozen=True)
class Part:
    """One part of a source, parsed from its text."""

    text: str
    location: str
    voc: bool = False
    part: str | None = None
    margin: float | None = None
    group: str | None = None
    licence: str | None = None

    @property
    def plain(self) -> bool:
        """A part read exactly as a one-part source always was (no voc:, no option)."""
        return not self.voc and self.part is None and self.group is None and self.licence is None


def split_sources(value: str | Sequence[str] | None) -> list[str]:
    """The parts of a source given as one string and/or a list: each item split at commas, blanks dropped."""
    if value is None:
        return []
    items = [value] if isinstance(value, str) else list(value)
    return [p.strip() for item in items for p in str(item).split(",") if p.strip()]


def parse_part(text: str) -> Part:
    """``[voc:]LOCATION[?opt=value&...]`` -> Part; an unknown option or bad value is a SourceError naming it."""
    text = text.strip()
    body, voc = (text[len(VOC_PREFIX):], True) if text.lower().startswith(VOC_PREFIX) else (text, False)
    location, _, query = body.partition("?")
    options: dict[str, str] = {}
    if query:
        pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
        keys = {k for k, _ in pairs}
        if re.match(r"(?i)^https?://", location) and not keys <= set(OPTIONS):
            location, pairs = body, []  # a URL's own query string
        for key, value in pairs:
            if key not in OPTIONS:
                raise SourceError(
                    f"The data source part {text!r} has an unknown option {key!r}; a part's options are "
                    f"{', '.join(OPTIONS)} (e.g. voc:PATH?part=tune, PATH?group=person)."
                )
            options[key] = value
    if not location.strip():
        raise SourceError(f"The data source part {text!r} names no folder, zip or URL before its options.")
    margin: float | None = None
    if "margin" in options:
        try:
            margin = float(options["margin"])
            if not 0 <= margin <= 2:
                raise ValueError
        except ValueError:
            raise SourceError(
                f"The data source part {text!r}: margin={options['margin']!r} is not a number from 0 to 2 "
                "(a share of the box's width and height added on each side)."
            ) from None
    if not voc and ("part" in options or "margin" in options):
        which = "part" if "part" in options else "margin"
        raise SourceError(f"The data source part {text!r}: the option {which}= applies to voc: parts only.")
    group = options.get("group") or None
    if group is not None and group not in GROUP_RULES:
        raise SourceError(
            f"The data source part {text!r}: group={group!r} is not a grouping rule; use group=person "
            "(the number at the start of a file name is the person)."
        )
    return Part(text=text, location=location.strip(), voc=voc, part=options.get("part") or None,
                margin=margin, group=group, licence=options.get("licence") or None)


def training_source(given: str | Sequence[str] | None, profile_sources: Sequence[str], shared_datasets: Path,
                    data_source: str) -> list[str]:
    """The parts a training run reads: ``given`` (--source, the flow's parameter), else the profile's
    own list (relative parts taken from ``shared_datasets``), else ``data_source`` (MASKCLS_DATA_SOURCE
    or the pinned default)."""
    return (split_sources(given) or resolve_parts(split_sources(list(profile_sources)), shared_datasets)
            or split_sources(data_source))


def resolve_parts(parts: Sequence[str], base: Path) -> list[str]:
    """Each relative local part's location taken from ``base`` (a profile's own list of parts)."""
    out = []
    for text in parts:
        prefix = VOC_PREFIX if text.lower().startswith(VOC_PREFIX) else ""
        body = text[len(prefix):]
        location, sep, query = body.partition("?")
        if not re.match(r"(?i)^(https?|file)://", location) and not Path(location).expanduser().is_absolute():
            location = str(Path(base).expanduser().absolute() / location)
        out.append(f"{prefix}{location}{sep}{query}")
    return out


def source_licence(folder: Path) -> str | None:
    """The ``Licence:`` line of a SOURCE.md in ``folder`` or one of its two parents (None if none says)."""
    for candidate in (folder, *list(folder.parents)[:2]):
        try:
            text = (candidate / "SOURCE.md").read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        found = _LICENCE_LINE.search(text)
        return found.group(1).strip() if found else None
    return None


# --------------------------------------------------------------------------- VOC crops


@dataclass(frozen=True)
class Crop:
    """One face box cut from a photo: the photo's stem, the box's index in it, its class and bytes."""

    photo: str
    index: int
    label: str
    data: bytes = field(repr=False)


def crop_box(width: int, height: int, box: tuple[float, float, float, float], margin: float) -> tuple[int, int, int, int] | None:
    """``xmin ymin xmax ymax`` grown by ``margin`` x its width/height on each side, clipped to the
    photo; (x0, y0, x1, y1) in whole pixels, or None when nothing of it is inside the photo."""
    x0, y0, x1, y1 = box
    if not all(math.isfinite(v) for v in box) or x1 <= x0 or y1 <= y0:
        return None
    mx, my = margin * (x1 - x0), margin * (y1 - y0)
    left, top = max(0, math.floor(x0 - mx)), max(0, math.floor(y0 - my))
    right, bottom = min(width, math.ceil(x1 + mx)), min(height, math.ceil(y1 + my))
    if right <= left or bottom <= top:
        return None
    return left, top, right, bottom


def read_voc_boxes(xml_path: Path) -> tuple[str | None, list[tuple[str, tuple[float, float, float, float]]]]:
    """(``<filename>``, [(class, (xmin, ymin, xmax, ymax))]) of a PASCAL VOC file, read with a real XML
    parser; a file that does not parse, or a box without numbers, is a SourceError naming the file."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise SourceError(f"The PASCAL VOC annotation {xml_path} cannot be read as XML: {exc}.") from None
    boxes = []
    for k, obj in enumerate(root.iter("object")):
        name = (obj.findtext("name") or "").strip()
        bb = obj.find("bndbox")
        if not name or bb is None:
            raise SourceError(f"The PASCAL VOC annotation {xml_path}: <object> number {k + 1} has no "
                              "<name> or no <bndbox>.")
        try:
            coords = tuple(float((bb.findtext(t) or "").strip()) for t in ("xmin", "ymin", "xmax", "ymax"))
        except ValueError:
            raise SourceError(f"The PASCAL VOC annotation {xml_path}: the <bndbox> of <object> number {k + 1} "
                              f"({name}) does not hold four numbers xmin ymin xmax ymax.") from None
        boxes.append((name, coords))  # type: ignore[arg-type]
    return root.findtext("filename"), boxes


def voc_photos(folder: Path, part: str | None) -> list[tuple[Path, Path]]:
    """(image, annotation) of each photo of a VOC folder, only those of ``part`` in its splits.csv."""
    images, annotations = folder / "images", folder / "annotations"
    if not images.is_dir() or not annotations.is_dir():
        raise SourceError(f"The voc: source {folder} is not a PASCAL VOC folder: it needs images/ and "
                          "annotations/ sub-folders (annotations/<name>.xml for images/<name>.<ext>).")
    by_stem = {p.stem: p for p in sorted(images.iterdir()) if p.is_file() and not p.name.startswith(".")}
    wanted: set[str] | None = None
    if part is not None:
        splits = folder / "splits.csv"
        try:
            with splits.open(newline="") as fh:
                rows = list(csv.DictReader(fh))
            wanted = {Path(r["image"]).stem for r in rows if r["part"] == part}
        except (OSError, KeyError, csv.Error) as exc:
            raise SourceError(f"The voc: source {folder}?part={part} needs {splits} with columns image,part "
                              f"({exc.__class__.__name__}: {exc}).") from None
        if not wanted:
            known = sorted({r.get("part", "") for r in rows})
            raise SourceError(f"{splits} lists no photo in part {part!r} (its parts: {', '.join(known)}).")
    out = []
    for xml in sorted(annotations.glob("*.xml")):
        if wanted is not None and xml.stem not in wanted:
            continue
        image = by_stem.get(xml.stem)
        if image is None:
            raise SourceError(f"The PASCAL VOC annotation {xml} has no photo {xml.stem}.* in {images}.")
        out.append((image, xml))
    if not out:
        raise SourceError(f"The voc: source {folder} has no annotated photo"
                          f"{f' in part {part!r}' if part else ''} (annotations/*.xml with a photo in images/).")
    return out


def voc_crops(folder: Path, part: str | None, margin: float) -> list[Crop]:
    """Every box of every (selected) photo cut out with ``margin`` and stored as PNG (lossless)."""
    import cv2
    import numpy as np

    crops: list[Crop] = []
    for image, xml in voc_photos(folder, part):
        _, boxes = read_voc_boxes(xml)
        pixels = cv2.imdecode(np.frombuffer(read_regular(image), np.uint8), cv2.IMREAD_COLOR)
        if pixels is None:
            raise SourceError(f"The photo {image} of the voc: source {folder} cannot be decoded as an image.")
        h, w = pixels.shape[:2]
        for k, (label, box) in enumerate(boxes):
            rect = crop_box(w, h, box, margin)
            if rect is None:
                continue
            x0, y0, x1, y1 = rect
            ok, buf = cv2.imencode(".png", pixels[y0:y1, x0:x1])
            if ok:
                crops.append(Crop(photo=image.stem, index=k, label=label, data=buf.tobytes()))
    return crops


# --------------------------------------------------------------------------- composition


def fetch_sources(
    parts: Sequence[str],
    downloads_dir: Path,
    *,
    crop_margin: float,
    pin_for: Callable[[str], Path | None] = lambda _: None,
    progress: bool = True,
    timeout: float = 30.0,
) -> SourceData:
    """Read a source of one or more parts into one folder of class folders (see the module's text)."""
    texts = split_sources(parts)
    if not texts:
        raise SourceError("The data source is empty: give at least one folder, zip, URL or voc: folder "
                          "(--source, repeatable; MASKCLS_DATA_SOURCE, comma-separated).")
    parsed = [parse_part(t) for t in texts]
    if len(parsed) == 1 and parsed[0].plain:
        p = parsed[0]
        raw = fetch_source(p.location, downloads_dir, pin=pin_for(p.location), progress=progress, timeout=timeout)
        licence = source_licence(Path(raw.root)) if raw.kind == "folder" else None
        return raw.model_copy(update={"licences": [licence] if licence else []})

    downloads_dir = Path(downloads_dir).expanduser().absolute()
    plan: list[tuple[Part, str, SourceData | None, Path]] = []  # part, tag, raw (plain), folder
    tags: set[str] = set()
    for p in parsed:
        if p.voc:
            folder = Path(p.location.removeprefix("file://")).expanduser().absolute()
            if not folder.is_dir():
                raise SourceError(f"The voc: source part {p.text!r}: {folder} is not a folder (a voc: part is a "
                                  "local PASCAL VOC folder with images/ and annotations/).")
            raw = None
        else:
            raw = fetch_source(p.location, downloads_dir, pin=pin_for(p.location), progress=progress,
                               timeout=timeout)
            folder = Path(raw.root)
            if is_split_root(folder):
                raise SourceError(f"The data source part {p.text!r} is already split into train/ and test/ "
                                  "folders; such a source cannot be combined with others (give it alone).")
        tag = _tag(p, folder, tags)
        tags.add(tag)
        plan.append((p, tag, raw, folder))

    identity = [
        {"part": p.text, "tag": tag, "fingerprint": raw.fingerprint if raw else folder_fingerprint(folder),
         "margin": (p.margin if p.margin is not None else crop_margin) if p.voc else None}
        for p, tag, raw, folder in plan
    ]
    key = hashlib.sha256(json.dumps([LAYOUT_VERSION, identity], sort_keys=True).encode()).hexdigest()
    target = downloads_dir / "composed" / key[:32]
    licences = sorted({lic for p, _, raw, folder in plan if (lic := p.licence or source_licence(folder))})
    if not target.is_dir():
        _compose(plan, target, crop_margin)
    return SourceData(
        source=",".join(texts),
        kind="multi",
        root=str(target),
        fingerprint=key,
        licences=licences,
        parts=[raw if raw is not None else SourceData(source=p.text, kind="voc", root=str(folder),
                                                      fingerprint=identity[k]["fingerprint"])
               for k, (p, _, raw, folder) in enumerate(plan)],
    )


def _tag(part: Part, folder: Path, taken: set[str]) -> str:
    """A short name of the part for the composed file names: its folder's name, made unique."""
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", folder.name).strip("-").lower() or "part"
    if part.voc and part.part:
        base = f"{base}-{re.sub(r'[^A-Za-z0-9_-]+', '-', part.part).lower()}"
    tag, n = base, 2
    while tag in taken:
        tag, n = f"{base}-{n}", n + 1
    return tag


def _person(name: str, part: Part, folder: Path) -> str:
    found = re.match(r"\d+", name)
    if not found:
        raise SourceError(f"The data source part {part.text!r} groups by person, but the file name {name!r} in "
                          f"{folder} does not start with a number (the person).")
    return found.group(0)


def _compose(plan: list[tuple[Part, str, SourceData | None, Path]], target: Path, crop_margin: float) -> None:
    """Write the composed folder via a temp folder and a rename, so a half-written one is never used."""
    base = target.parent
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{target.name[:16]}-", dir=base))
    except OSError as exc:
        raise SourceError(f"Cannot create the folder for the combined source under {base}: {exc}.") from None
    try:
        for p, tag, _, folder in plan:
            if p.voc:
                margin = p.margin if p.margin is not None else crop_margin
                for crop in voc_crops(folder, p.part, margin):
                    name = composed_name(tag, crop.photo, f"{crop.photo}_{crop.index:03d}.png")
                    out = tmp / _class_dir(crop.label, p) / name
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(crop.data)
                continue
            candidates, _ = scan(folder)
            for rel, label in candidates:
                file_name = rel.rsplit("/", 1)[-1]
                group = _person(file_name, p, folder) if p.group == "person" else ""
                out = tmp / _class_dir(label, p) / composed_name(tag, group, file_name)
                out.parent.mkdir(parents=True, exist_ok=True)
                _link_or_copy(folder / rel, out)
        publish_dir(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SourceError(f"Cannot write the combined source into {base}: {exc}.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def _class_dir(label: str, part: Part) -> str:
    if not label or label.startswith(".") or "/" in label or "\\" in label or label in ("..",):
        raise SourceError(f"The data source part {part.text!r} has a class named {label!r}, which cannot be a "
                          "folder name.")
    return label


def _link_or_copy(src: Path, dst: Path) -> None:
    """A hard link (no extra space) where the file system allows it, else a copy."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copyfile(src, dst)
