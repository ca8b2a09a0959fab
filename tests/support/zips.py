"""Zip archives made in memory, including the hostile kinds a source must refuse."""

from __future__ import annotations

import io
import stat
import zipfile
from collections.abc import Mapping
from pathlib import Path


def zip_of(entries: Mapping[str, bytes], compression: int = zipfile.ZIP_DEFLATED,
           links: Mapping[str, str] | None = None) -> bytes:
    """A zip of ``entries`` (name -> bytes, written as named, '..' and absolute names too),
    plus ``links`` (name -> target) stored as Unix symbolic links."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for name, data in entries.items():
            zf.writestr(name, data)
        for name, target in (links or {}).items():
            link = zipfile.ZipInfo(name)
            link.create_system = 3  # Unix: the mode bits below are read as st_mode
            link.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(link, target)
    return buf.getvalue()


def zip_of_folder(folder: Path, prefix: str = "dataset", compression: int = zipfile.ZIP_DEFLATED) -> bytes:
    """A zip of every file below ``folder``, each under ``prefix``/ (e.g. a GitHub archive's
    "<repo>-<sha>/dataset")."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression) as zf:
        for p in sorted(folder.rglob("*")):
            if p.is_file():  # with the file's own mtime: the same folder gives the same bytes
                zf.write(p, f"{prefix}/{p.relative_to(folder).as_posix()}")
    return buf.getvalue()


def flag_encrypted(body: bytes) -> bytes:
    """``body`` with bit 0 (encrypted) of the general purpose flags set on its first entry, in the
    local and the central header (no real encryption: the flag is what a reader checks)."""
    out = bytearray(body)
    assert out[:4] == b"PK\x03\x04", "not a zip"
    out[6] |= 0x1
    central = out.index(b"PK\x01\x02")
    out[central + 8] |= 0x1
    return bytes(out)
