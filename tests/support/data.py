"""Small real subsets of the shared face-mask data (../shared/datasets/face-mask)."""

from __future__ import annotations

import shutil
from pathlib import Path

from . import REPO

SHARED = REPO.parent / "shared" / "datasets" / "face-mask"
CLASSES = ("with_mask", "without_mask")
#: From this sorted position on, with_mask/ is past its "0_0_0 copy N" byte-identical copies.
PAST_COPIES = 300


def shared_files(cls: str) -> list[Path]:
    """The shared data's files of class ``cls``, by sorted name."""
    if not SHARED.is_dir():
        raise RuntimeError(f"the shared dataset is missing: {SHARED}")
    return sorted(p for p in (SHARED / cls).iterdir() if p.is_file())


def copy_subset(dest: Path, per_class: int, offset: int = 0, step: int = 1) -> Path:
    """``per_class`` real photos of each class into ``dest``/<class>/: every ``step``-th file by
    sorted name from ``offset``. Different (offset, step) give different images, so different
    dataset fingerprints and no cache shared with another test's subset."""
    for cls in CLASSES:
        (dest / cls).mkdir(parents=True, exist_ok=True)
        for f in shared_files(cls)[offset::step][:per_class]:
            shutil.copy2(f, dest / cls / f.name)
    return dest


def write_files(root: Path, files: dict[str, bytes]) -> Path:
    """Write ``files`` (path relative to ``root`` -> bytes), making folders as needed."""
    for rel, data in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(data)
    return root
