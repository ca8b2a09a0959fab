"""Content-addressed file store for arrays and models, with atomic writes.

Every file is named by the sha256 of its bytes and written through a temporary file
renamed into place, so a killed writer never leaves a partial file under a real name.
Every read checks the fingerprint, so a file altered after it was written is refused.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict

from maskcls.errors import MaskclsError
from maskcls.files import sha256_file


class StoreError(MaskclsError, RuntimeError):
    """A stored file is missing or no longer matches its fingerprint."""


class FileRef(BaseModel):
    """A file in the store: where it is and what its bytes hash to."""

    model_config = ConfigDict(frozen=True)

    path: str
    sha256: str
    size: int

    def verify(self) -> bool:
        """True when the file exists with its recorded size and hash."""
        p = Path(self.path)
        try:
            if p.stat().st_size != self.size:
                return False
        except OSError:
            return False
        return sha256_file(p) == self.sha256

    def check(self) -> Path:
        """The path, after verifying it; a clear error otherwise."""
        if not Path(self.path).exists():
            raise StoreError(f"{self.path}: stored file is missing")
        if not self.verify():
            raise StoreError(f"{self.path}: stored file no longer matches its sha256 {self.sha256[:12]}")
        return Path(self.path)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write bytes to path through a temp file in the same folder and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Store:
    """Files under ``root/<kind>/<sha256><suffix>``; writes are atomic, reads verified."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    def put(self, kind: str, suffix: str, writer: Callable[[Path], None]) -> FileRef:
        """Let ``writer`` fill a temp path, then move it to its content address."""
        folder = self.root / kind
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=folder, prefix=".incoming-", suffix=suffix)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            writer(tmp)
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            digest = sha256_file(tmp)
            final = folder / f"{digest}{suffix}"
            os.replace(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return FileRef(path=str(final), sha256=digest, size=final.stat().st_size)

    def put_bytes(self, kind: str, suffix: str, data: bytes) -> FileRef:
        return self.put(kind, suffix, lambda p: p.write_bytes(data))

    def put_array(self, kind: str, array: np.ndarray) -> FileRef:
        return self.put(kind, ".npy", lambda p: np.save(p, array, allow_pickle=False))

    def put_file(self, kind: str, source: Path) -> FileRef:
        data = Path(source).read_bytes()
        return self.put_bytes(kind, Path(source).suffix, data)


def load_array(ref: FileRef, mmap: bool = True) -> np.ndarray:
    """Load a stored .npy after checking its fingerprint; memory-mapped by default."""
    path = ref.check()
    return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
