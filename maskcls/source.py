"""Get the raw data: an http(s) URL of a zip, a local zip, or a local folder of class folders.

``fetch_source`` turns what the user gave into a ``SourceData``: the folder whose
sub-folders are the class folders, and a cheap fingerprint of the raw source.
Downloads are cached (conditional GET on the next run), archives are extracted once
per content hash, and nothing half-written is ever left where a later run would
trust it. Every problem is a ``SourceError`` whose message alone says what to do.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.parse
import urllib.request
import zipfile
import zlib
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Literal

import httpx
from pydantic import BaseModel

from maskcls.errors import MaskclsError
from maskcls.files import (
    IMAGE_SUFFIXES,
    Skip,
    folder_fingerprint,
    is_class_root,
    is_split_root,
    scan_tree,
    sha256_file,
    visible_subdirs,
    walk,
)
from maskcls.store import atomic_write_bytes

log = logging.getLogger(__name__)

ENV_HINT = (
    "To use data already on this machine, set MASKCLS_DATA_SOURCE to a local folder or zip "
    "of the dataset (e.g. MASKCLS_DATA_SOURCE=../shared/datasets/face-mask)."
)
_CHUNK = 1 << 20
_MAX_SEARCH_DEPTH = 8
_MAX_LISTED = 10
# Base of the exponential backoff between download attempts (seconds); tests shrink it.
_BACKOFF_SECONDS = 1.0
# Temp files/dirs older than this were left by a killed run and can be removed safely.
_STALE_SECONDS = 24 * 3600
_ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06", b"PK\x07\x08")
_FLAG_ENCRYPTED = 0x1
_FLAG_UTF8 = 0x800


class SourceError(MaskclsError):
    """The data source cannot be used; the message names the source/file/URL and the problem."""


class SourceData(BaseModel, frozen=True):
    """Where the raw images of one source are, and a cheap identity of that source."""

    source: str
    #: "multi": several parts (or a voc: part) composed into one folder (maskcls.multisource);
    #: "voc": one such part, a PASCAL VOC folder.
    kind: Literal["url", "zip", "folder", "multi", "voc"]
    root: str
    fingerprint: str
    etag: str | None = None
    last_modified: str | None = None
    pin_report: dict[str, Any] | None = None
    #: The licences the parts' SOURCE.md (or licence= option) state, e.g. "CC BY-NC-SA 4.0".
    licences: list[str] = []
    #: The parts of a "multi" source, in the order given.
    parts: list["SourceData"] = []


# --------------------------------------------------------------------------- entry point


def fetch_source(
    source: str,
    downloads_dir: Path,
    *,
    pin: Path | None = None,
    progress: bool = True,
    timeout: float = 30.0,
    retries: int = 3,
    max_extract_bytes: int = 4 * 2**30,
) -> SourceData:
    """Resolve ``source`` (URL, zip or folder) to its class-folder root, downloading/extracting as needed.

    When ``pin`` is given the root is checked against it (``verify_pin``) and the
    report is stored in ``pin_report``.
    """
    source = str(source).strip()
    if not source:
        raise SourceError(
            "The data source is empty: give a folder of class folders, a zip of one, or an http(s) URL of a zip "
            "(MASKCLS_DATA_SOURCE sets it)."
        )
    downloads_dir = Path(downloads_dir).expanduser().absolute()
    etag: str | None = None
    last_modified: str | None = None

    if re.match(r"(?i)^https?://", source):
        kind: Literal["url", "zip", "folder"] = "url"
        got = _download(source, downloads_dir, progress=progress, timeout=timeout, retries=retries)
        extracted = _extract_zip(got.path, got.sha256, downloads_dir, f"the zip downloaded from {source}",
                                 max_extract_bytes)
        root = _find_class_root(extracted, f"the archive downloaded from {source}")
        fingerprint, etag, last_modified = got.sha256, got.etag, got.last_modified
    else:
        path = _local_path(source)
        if path.is_dir():
            kind = "folder"
            base = path.resolve()
            _check_symlinks(base, source)
            root = _find_class_root(base, f"the folder {source}")
            fingerprint = folder_fingerprint(root)
        elif path.is_file():
            kind = "zip"
            try:
                sha = sha256_file(path)
            except OSError as exc:
                raise SourceError(f"Cannot read the zip {source}: {exc}.") from None
            extracted = _extract_zip(path, sha, downloads_dir, f"the zip {source}", max_extract_bytes)
            root = _find_class_root(extracted, f"the zip {source}")
            fingerprint = sha
        elif path.exists() or path.is_symlink():
            raise SourceError(
                f"The data source {source} ({path}) is neither a folder nor a zip file "
                "(or it is a broken link); give a folder of class folders, a zip of one, or an http(s) URL of a zip."
            )
        else:
            raise SourceError(
                f"The data source {source} does not exist (looked for {path}). Give an existing folder of "
                "class folders, a zip of one, or an http(s) URL of a zip; MASKCLS_DATA_SOURCE sets it."
            )

    pin_report = verify_pin(root, pin) if pin is not None else None
    return SourceData(
        source=source,
        kind=kind,
        root=str(root),
        fingerprint=fingerprint,
        etag=etag,
        last_modified=last_modified,
        pin_report=pin_report,
    )


def _local_path(source: str) -> Path:
    """A local path from a plain path or a ``file://`` URL (relative paths are taken from the cwd)."""
    if source.lower().startswith("file://"):
        parsed = urllib.parse.urlparse(source)
        if parsed.netloc not in ("", "localhost"):
            raise SourceError(
                f"The data source {source} is a file:// URL on another host ({parsed.netloc}); "
                "only local file:// paths are supported."
            )
        return Path(urllib.request.url2pathname(parsed.path))
    return Path(source).expanduser().absolute()


# --------------------------------------------------------------------------- download


@dataclass(frozen=True)
class _Download:
    path: Path
    sha256: str
    etag: str | None
    last_modified: str | None


class _Retryable(Exception):
    """One failed attempt that may succeed when tried again."""

    def __init__(self, kind: str, detail: str) -> None:
        super().__init__(detail)
        self.kind = kind  # "connect" | "timeout" | "status" | "transport"
        self.detail = detail


def _download(url: str, downloads_dir: Path, *, progress: bool, timeout: float, retries: int) -> _Download:
    """Download ``url`` into the cache (conditional GET against the cached copy), with retries."""
    try:
        downloads_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise SourceError(f"Cannot create the downloads folder {downloads_dir} for {url}: {exc}.") from None
    key = hashlib.sha256(url.encode()).hexdigest()
    zip_path = downloads_dir / f"{key}.zip"
    meta_path = downloads_dir / f"{key}.json"
    _remove_stale(downloads_dir, f".{key}.*.part")
    cached = _load_cached(url, zip_path, meta_path)

    headers = {"User-Agent": "maskcls"}
    if cached is not None:
        if cached.etag:
            headers["If-None-Match"] = cached.etag
        if cached.last_modified:
            headers["If-Modified-Since"] = cached.last_modified

    attempts = max(1, int(retries))
    failure: _Retryable | None = None
    with httpx.Client(timeout=timeout, follow_redirects=True) as client:
        for attempt in range(1, attempts + 1):
            try:
                return _attempt(client, url, headers, cached, zip_path, meta_path, key, progress)
            except _Retryable as exc:
                failure = exc
                if attempt < attempts:
                    delay = _BACKOFF_SECONDS * 2 ** (attempt - 1)
                    log.warning("download of %s failed (%s); retrying in %.1f s", url, exc.detail, delay)
                    time.sleep(delay)
    assert failure is not None

    if cached is not None:
        # The cached copy is exactly what this URL served last time (hash checked); an offline
        # machine, or one facing a server outage, that downloaded before can keep working.
        log.warning("cannot reach %s (%s); using the cached download %s", url, failure.detail, cached.path)
        return cached
    raise SourceError(_failure_message(url, failure, attempts, timeout)) from None


def _failure_message(url: str, failure: _Retryable, attempts: int, timeout: float) -> str:
    tries = f"{attempts} attempt{'s' if attempts != 1 else ''}"
    host = urllib.parse.urlparse(url).netloc
    if failure.kind == "connect":
        return (
            f"Could not connect to {host} to download {url} ({failure.detail}; {tries}): "
            f"the network seems unavailable. {ENV_HINT}"
        )
    if failure.kind == "timeout":
        return (
            f"Downloading {url} timed out: no answer within the {timeout:g} s timeout ({failure.detail}; {tries}). "
            f"The server or the network is too slow or unreachable; retry with a longer timeout. {ENV_HINT}"
        )
    if failure.kind == "status":
        return f"Downloading {url} failed: the server answered {failure.detail} ({tries}). Retry later. {ENV_HINT}"
    return f"Downloading {url} failed: {failure.detail} ({tries}). {ENV_HINT}"


def _attempt(
    client: httpx.Client,
    url: str,
    headers: dict[str, str],
    cached: _Download | None,
    zip_path: Path,
    meta_path: Path,
    key: str,
    progress: bool,
) -> _Download:
    """One GET: 304 -> the cached copy; 200 -> stream to a temp file and move it into place."""
    try:
        with client.stream("GET", url, headers=headers) as response:
            code = response.status_code
            if code == 304:
                if cached is None:
                    raise SourceError(f"{url} answered 304 Not Modified to a request that was not conditional.")
                log.info("%s not modified; using the cached download %s", url, cached.path)
                return _Download(
                    cached.path,
                    cached.sha256,
                    response.headers.get("etag") or cached.etag,
                    response.headers.get("last-modified") or cached.last_modified,
                )
            if code >= 500 or code in (408, 429):
                raise _Retryable("status", f"HTTP {code} {response.reason_phrase}".strip())
            if code != 200:
                hint = " Check the URL." if code in (401, 403, 404, 410) else ""
                raise SourceError(
                    f"Downloading {url} failed: the server answered HTTP {code} {response.reason_phrase}.{hint}"
                )
            return _receive(response, url, zip_path, meta_path, key, progress)
    except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
        raise SourceError(f"The data source {url} is not a usable URL: {exc}.") from None
    except httpx.TimeoutException as exc:
        raise _Retryable("timeout", type(exc).__name__) from None
    except httpx.ConnectError as exc:
        raise _Retryable("connect", str(exc) or type(exc).__name__) from None
    except httpx.TransportError as exc:
        raise _Retryable("transport", f"the connection broke ({exc or type(exc).__name__})") from None


def _receive(
    response: httpx.Response, url: str, zip_path: Path, meta_path: Path, key: str, progress: bool
) -> _Download:
    """Stream a 200 response to a temp file, checking that it is a zip, then rename it into place."""
    ctype = response.headers.get("content-type", "")
    chunks = response.iter_bytes(_CHUNK)
    first = b""
    for first in chunks:
        if first:
            break
    if "html" in ctype.lower() or first.lstrip()[:1] == b"<":
        raise SourceError(
            f"{url} returned HTML (a web page, content-type {ctype or 'unknown'}), not a zip archive: the URL "
            "probably points at a page rather than the file (for GitHub use .../archive/<commit>.zip)."
        )
    if not first.startswith(_ZIP_MAGICS):
        what = "an empty body" if not first else f"content starting with {first[:8]!r}"
        raise SourceError(
            f"{url} did not return a zip archive (content-type {ctype or 'unknown'}, {what}); "
            "the data source must be a zip of class folders."
        )

    try:
        total = int(response.headers.get("content-length") or 0) or None
    except ValueError:
        total = None
    fd, tmp_name = tempfile.mkstemp(prefix=f".{key}.", suffix=".part", dir=zip_path.parent)
    tmp = Path(tmp_name)
    digest = hashlib.sha256()
    try:
        with os.fdopen(fd, "wb") as out, _Progress(url, total, progress) as bar:
            for chunk in _prepend(first, chunks):
                out.write(chunk)
                digest.update(chunk)
                bar.update(response.num_bytes_downloaded)
            out.flush()
            os.fsync(out.fileno())
        sha = digest.hexdigest()
        os.replace(tmp, zip_path)  # only a complete file ever has the cache name
    except OSError as exc:
        raise SourceError(f"Cannot write the download of {url} to {zip_path.parent}: {exc}.") from None
    finally:
        tmp.unlink(missing_ok=True)

    got = _Download(zip_path, sha, response.headers.get("etag"), response.headers.get("last-modified"))
    meta = {
        "url": url,
        "sha256": sha,
        "size": zip_path.stat().st_size,
        "etag": got.etag,
        "last_modified": got.last_modified,
        "fetched_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
    log.info("downloaded %s (%d bytes, sha256 %s)", url, meta["size"], sha)
    return got


def _prepend(first: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if first:
        yield first
    yield from rest


class _Progress:
    """A rich download bar on a terminal; a no-op otherwise, so logs of non-tty runs stay clean."""

    def __init__(self, url: str, total: int | None, enabled: bool) -> None:
        self._progress: Any = None
        self._task: Any = None
        if not enabled:
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        console = Console(stderr=True)
        if not console.is_terminal:
            return
        self._progress = Progress(
            TextColumn("[bold]download"),
            BarColumn(),
            DownloadColumn(),
            TransferSpeedColumn(),
            TimeRemainingColumn(),
            console=console,
            transient=True,
        )
        self._task = self._progress.add_task(url, total=total)

    def __enter__(self) -> "_Progress":
        if self._progress is not None:
            self._progress.start()
        return self

    def update(self, completed: int) -> None:
        if self._progress is not None:
            self._progress.update(self._task, completed=completed)

    def __exit__(self, *exc: object) -> None:
        if self._progress is not None:
            self._progress.stop()


def _load_cached(url: str, zip_path: Path, meta_path: Path) -> _Download | None:
    """The cached download of ``url`` if its sidecar matches the file (size and sha256), else None."""
    try:
        meta = json.loads(meta_path.read_text())
        if meta.get("url") != url or zip_path.stat().st_size != meta.get("size"):
            return None
        # Re-hash: a file replaced or truncated behind our back must not be trusted (and a run
        # killed between writing the zip and its sidecar leaves them disagreeing).
        if sha256_file(zip_path) != meta.get("sha256"):
            log.warning("cached download %s does not match its record; downloading again", zip_path)
            return None
        return _Download(zip_path, meta["sha256"], meta.get("etag"), meta.get("last_modified"))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


# --------------------------------------------------------------------------- zip extraction


def _extract_zip(zip_path: Path, sha: str, downloads_dir: Path, label: str, max_bytes: int) -> Path:
    """Extract into ``downloads_dir/extracted/<sha>`` (via a temp dir and a rename); reuse it if present."""
    base = downloads_dir / "extracted"
    target = base / sha
    if target.is_dir():
        return target
    try:
        base.mkdir(parents=True, exist_ok=True)
        _remove_stale(base, ".tmp-*")
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{sha[:16]}-", dir=base))
    except OSError as exc:
        raise SourceError(f"Cannot create the extraction folder under {base} for {label}: {exc}.") from None
    try:
        _extract_into(zip_path, tmp, label, max_bytes)
        publish_dir(tmp, target)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise SourceError(f"Cannot extract {_with_path(label, zip_path)} into {base}: {exc}.") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def publish_dir(tmp: Path, target: Path) -> None:
    """Move a finished folder into place in one rename; when another process got there first,
    its (identical) folder stays and ``tmp`` is dropped."""
    try:
        os.rename(tmp, target)
    except OSError:
        if not target.is_dir():  # not just another process having finished first
            raise
        shutil.rmtree(tmp, ignore_errors=True)


def _with_path(label: str, zip_path: Path) -> str:
    """The label, naming the file too when the label does not (a download is named by its URL)."""
    return label if str(zip_path) in label else f"{label} ({zip_path})"


def _entry_parts(info: zipfile.ZipInfo, label: str) -> list[str]:
    """The path components of an entry, refusing anything that could land outside the target."""
    name = info.filename
    if not info.flag_bits & _FLAG_UTF8 and not name.isascii():
        # Many tools write UTF-8 names without setting the UTF-8 flag; zipfile then decodes cp437.
        try:
            name = name.encode("cp437").decode("utf-8")
        except UnicodeError:
            pass
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        raise SourceError(f"Refusing {label}: entry {info.filename!r} has an absolute path.")
    parts = [p for p in re.split(r"[\\/]", name) if p not in ("", ".")]
    if ".." in parts:
        raise SourceError(
            f"Refusing {label}: entry {info.filename!r} has a '..' component that would climb out of "
            "the target folder."
        )
    if "\x00" in name:
        raise SourceError(f"Refusing {label}: entry {info.filename!r} has a NUL character in its name.")
    return parts


def _extract_into(zip_path: Path, dest: Path, label: str, max_bytes: int) -> None:
    """Check every entry (names, flags, declared sizes) before extracting any of them into ``dest``."""
    label = _with_path(label, zip_path)
    try:
        zf = zipfile.ZipFile(zip_path)
    except zipfile.BadZipFile as exc:
        raise SourceError(f"{label} is not a valid zip archive ({exc}); it is corrupt or truncated.") from None
    except (zipfile.LargeZipFile, NotImplementedError, ValueError, EOFError) as exc:
        raise SourceError(f"{label} cannot be read as a zip archive: {exc}.") from None
    with zf:
        infos = zf.infolist()
        if not any(not i.is_dir() for i in infos):
            raise SourceError(f"{label} is an empty zip archive: it holds no files.")
        plan: list[tuple[zipfile.ZipInfo, list[str]]] = []
        declared = 0
        for info in infos:
            parts = _entry_parts(info, label)
            if info.flag_bits & _FLAG_ENCRYPTED:
                raise SourceError(
                    f"Refusing {label}: entry {info.filename!r} is encrypted (password-protected); "
                    "give an unencrypted zip."
                )
            if stat.S_ISLNK(info.external_attr >> 16):
                raise SourceError(f"Refusing {label}: entry {info.filename!r} is a symbolic link.")
            declared += info.file_size
            plan.append((info, parts))
        if declared > max_bytes:
            raise SourceError(
                f"Refusing {label}: its entries declare {declared:,} bytes uncompressed, more than the "
                f"{max_bytes:,} bytes allowed; raise max_extract_bytes if this is expected."
            )

        root = dest.resolve()
        for info, parts in plan:
            if not parts:
                continue
            out = dest.joinpath(*parts)
            if not out.resolve().is_relative_to(root):  # belt and braces after the name checks
                raise SourceError(f"Refusing {label}: entry {info.filename!r} would be written outside the target.")
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                # zipfile stops every entry at its declared size (a lying header then fails its
                # CRC), so the declared total checked above bounds what is written.
                with zf.open(info) as src, open(out, "wb") as dst:
                    shutil.copyfileobj(src, dst, _CHUNK)
            except zipfile.BadZipFile as exc:
                raise SourceError(f"{label} is corrupt: entry {info.filename!r}: {exc}.") from None
            except (zlib.error, EOFError) as exc:
                raise SourceError(
                    f"{label} is corrupt: entry {info.filename!r} cannot be decompressed ({exc})."
                ) from None
            except (NotImplementedError, RuntimeError) as exc:
                raise SourceError(f"{label}: entry {info.filename!r} cannot be extracted ({exc}).") from None


# --------------------------------------------------------------------------- folders


def find_class_root(path: Path) -> Path:
    """The shallowest folder under ``path`` that has at least two sub-folders holding images.

    Hidden folders and ``__MACOSX`` are ignored; a folder named ``dataset`` with class
    folders is preferred over any other. A folder with ``train/`` and ``test/`` splits
    (each holding class folders) is returned itself, so the split stage can keep them.
    """
    return _find_class_root(Path(path), str(path))


def _find_class_root(path: Path, label: str) -> Path:
    if not path.is_dir():
        raise SourceError(f"{label} is not a folder ({path}).")
    found: list[tuple[int, Path]] = []
    # Real folders only (links to folders are not followed), so no folder is visited twice.
    queue: deque[tuple[int, Path]] = deque([(0, path)])
    while queue:
        depth, folder = queue.popleft()
        if is_split_root(folder, path) or is_class_root(folder, path):
            found.append((depth, folder))
            continue  # its sub-folders are classes, not candidates
        if depth < _MAX_SEARCH_DEPTH:
            queue.extend((depth + 1, d) for d in visible_subdirs(folder, path))
    if not found:
        raise SourceError(
            f"No class folders found in {label}: expected one sub-folder per class, each holding that class's "
            f"images ({', '.join(sorted(IMAGE_SUFFIXES))}), with at least two classes, e.g. "
            "with_mask/*.jpg and without_mask/*.jpg (possibly nested, as in <repo>/dataset/with_mask/)."
        )
    preferred = [(d, p) for d, p in found if p.name.lower() == "dataset"] or found
    best = min(d for d, _ in preferred)
    tied = [p for d, p in preferred if d == best]
    if len(tied) > 1:
        names = ", ".join(str(p.relative_to(path)) for p in tied[:_MAX_LISTED])
        raise SourceError(
            f"{label} holds several sets of class folders at the same depth ({names}); point the data "
            "source at the one folder whose sub-folders are the classes."
        )
    return tied[0]


def _check_symlinks(base: Path, label: str) -> None:
    """Refuse a folder source with a symlink (at any depth) that resolves outside it."""
    for entry in walk(base, include_hidden=True):
        if isinstance(entry, Skip) and entry.kind == "outside":
            raise SourceError(
                f"Refusing the folder {label}: the symbolic link {base / entry.rel} points outside it "
                f"({entry.reason}). Copy the files in, or point the data source at the folder that really "
                "holds them."
            )


# --------------------------------------------------------------------------- pin


def verify_pin(root: Path, pin: Path) -> dict[str, Any]:
    """Check that every file listed in the pin is under ``root`` with its sha256.

    Returns ``{"checked": n, "extra": [files under root not in the pin]}``; a missing or
    changed file raises ``SourceError``.
    """
    root, pin = Path(root), Path(pin)
    try:
        files = json.loads(pin.read_text(encoding="utf-8"))["files"]
        if not isinstance(files, dict) or not files:
            raise ValueError("'files' is not a non-empty mapping")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise SourceError(f"The pin {pin} cannot be read as a pin file ({exc}).") from None
    for rel in files:
        parts = re.split(r"[\\/]", rel)
        if rel.startswith(("/", "\\")) or ".." in parts:
            raise SourceError(f"The pin {pin} lists an unsafe path {rel!r}.")

    # Only regular files inside root count as present (nothing else is opened).
    present, skipped = scan_tree(root, include_hidden=True)
    regular = {f.rel: f.path for f in present}

    def check(item: tuple[str, str]) -> str | None:
        rel, expected = item
        path = regular.get(rel)
        if path is None:
            return "missing"
        try:
            return None if sha256_file(path) == str(expected).lower() else "changed"
        except OSError:
            return "missing"

    items = sorted(files.items())
    # hashlib releases the GIL on large buffers, so threads overlap reading and hashing.
    with ThreadPoolExecutor(max_workers=min(8, (os.cpu_count() or 1) + 2)) as pool:
        results = list(pool.map(check, items))
    missing = [rel for (rel, _), r in zip(items, results) if r == "missing"]
    changed = [rel for (rel, _), r in zip(items, results) if r == "changed"]
    if missing or changed:
        shown = [f"{r} (missing)" for r in missing] + [f"{r} (different sha256)" for r in changed]
        more = len(shown) - _MAX_LISTED
        listing = "; ".join(shown[:_MAX_LISTED]) + (f"; and {more} more" if more > 0 else "")
        raise SourceError(
            f"The data in {root} does not match the pin {pin.name}: of {len(files)} pinned files, "
            f"{len(missing)} are missing and {len(changed)} have a different sha256: {listing}. "
            "The download is incomplete or the data changed; delete the cached download to fetch it again, "
            "or set MASKCLS_DATA_SOURCE to a copy you trust."
        )
    listed = set(files)
    extra = sorted(rel for rel in [*regular, *(s.rel for s in skipped)] if rel not in listed)
    return {"checked": len(files), "extra": extra}


# --------------------------------------------------------------------------- helpers


def _remove_stale(folder: Path, pattern: str) -> None:
    """Remove temp files/dirs matching ``pattern`` that a killed run left behind long ago."""
    cutoff = time.time() - _STALE_SECONDS
    for p in folder.glob(pattern):
        try:
            if p.lstat().st_mtime < cutoff:
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        except OSError:
            pass
