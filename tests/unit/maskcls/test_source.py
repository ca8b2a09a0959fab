"""maskcls.source: URL/zip/folder sources, caching, safe extraction, class-root search, pins.

Downloads go to a real HTTP server on 127.0.0.1 started by the tests; nothing touches the network.
"""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import threading
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np
import pytest

from maskcls import source as src
from maskcls.config import DEFAULT_PIN
from maskcls.source import SourceData, SourceError, fetch_source, find_class_root, verify_pin
from tests.support.data import SHARED, write_files
from tests.support.ports import free_port
from tests.support.zips import flag_encrypted, zip_of


# --------------------------------------------------------------------------- helpers


def png(seed: int, size: int = 8) -> bytes:
    """A tiny distinct PNG."""
    rng = np.random.default_rng(seed)
    ok, buf = cv2.imencode(".png", rng.integers(0, 256, (size, size, 3), dtype=np.uint8))
    assert ok
    return buf.tobytes()


def dataset_entries(prefix: str = "Repo-abc/dataset", n: int = 2, seed: int = 0) -> dict[str, bytes]:
    """A GitHub-archive-like tree: class folders nested under <repo>/dataset, plus repo noise."""
    entries: dict[str, bytes] = {}
    for c, cls in enumerate(("with_mask", "without_mask")):
        for i in range(n):
            entries[f"{prefix}/{cls}/{cls}{i}.png"] = png(seed * 100 + c * 10 + i)
    entries["Repo-abc/README.md"] = b"# repo\n"
    entries["Repo-abc/plots/plot.png"] = png(999)  # one folder of images is not a class root
    return entries


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def assert_nothing_extracted(downloads: Path) -> None:
    """No extracted folder (finished or temporary) that a later run could pick up."""
    extracted = downloads / "extracted"
    assert not extracted.exists() or sorted(extracted.iterdir()) == []


# --------------------------------------------------------------------------- HTTP server


class Route:
    """A zip (or any body) served with ETag/Last-Modified, answering conditional GETs with 304."""

    def __init__(self, body: bytes, etag: str = '"v1"', last_modified: str = "Mon, 01 Jan 2024 00:00:00 GMT",
                 content_type: str = "application/zip", fail_first: int = 0, fail_status: int = 500,
                 delay: float = 0.0) -> None:
        self.body, self.etag, self.last_modified, self.content_type = body, etag, last_modified, content_type
        self.fail_first, self.fail_status, self.delay = fail_first, fail_status, delay
        self.statuses: list[int] = []
        self.release = threading.Event()

    def __call__(self, h: http.server.BaseHTTPRequestHandler) -> None:
        if self.delay:
            self.release.wait(self.delay)
        if self.fail_first > 0:
            self.fail_first -= 1
            return self._send(h, self.fail_status, b"boom", {"Content-Type": "text/plain"})
        if self.etag and h.headers.get("If-None-Match") == self.etag:
            return self._send(h, 304, b"", {"ETag": self.etag})
        headers = {"Content-Type": self.content_type}
        if self.etag:
            headers["ETag"] = self.etag
        if self.last_modified:
            headers["Last-Modified"] = self.last_modified
        self._send(h, 200, self.body, headers)

    def _send(self, h: http.server.BaseHTTPRequestHandler, code: int, body: bytes, headers: dict[str, str]) -> None:
        self.statuses.append(code)
        h.send_response(code)
        for k, v in headers.items():
            h.send_header(k, v)
        if code != 304:
            h.send_header("Content-Length", str(len(body)))
        h.end_headers()
        if code != 304:
            h.wfile.write(body)


class Server:
    def __init__(self) -> None:
        self.routes: dict[str, Callable[[http.server.BaseHTTPRequestHandler], None]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        state = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                state.requests.append((self.path, dict(self.headers)))
                route = state.routes.get(self.path)
                if route is None:
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                route(self)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        # Join handler threads on close and keep their errors (a client that timed out and left)
        # off stderr, so nothing leaks into a later test's captured output.
        self.httpd.daemon_threads = False
        self.httpd.handle_error = lambda request, client_address: None  # type: ignore[method-assign]
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()
        self.stopped = False

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        for route in self.routes.values():
            if isinstance(route, Route):
                route.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server() -> Iterator[Server]:
    s = Server()
    yield s
    s.stop()


@pytest.fixture(autouse=True)
def local_http(monkeypatch: pytest.MonkeyPatch) -> None:
    """Short retry backoff, and no proxy from the environment between the client and 127.0.0.1."""
    monkeypatch.setattr(src, "_BACKOFF_SECONDS", 0.01)
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy", "all_proxy"):
        monkeypatch.delenv(var, raising=False)


def fetch(source: str, downloads: Path, **kw: object) -> SourceData:
    kw.setdefault("progress", False)
    return fetch_source(source, downloads, **kw)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- URL downloads


def test_url_download_extracts_and_finds_nested_class_root(server: Server, tmp_path: Path) -> None:
    entries = dataset_entries()
    body = zip_of(entries)
    server.routes["/a.zip"] = Route(body)
    downloads = tmp_path / "dl"

    data = fetch(server.url("/a.zip"), downloads)

    assert data.kind == "url" and data.source == server.url("/a.zip")
    assert data.fingerprint == sha256(body)
    assert data.etag == '"v1"' and data.last_modified == "Mon, 01 Jan 2024 00:00:00 GMT"
    root = Path(data.root)
    assert root.is_absolute()
    assert root == downloads / "extracted" / sha256(body) / "Repo-abc" / "dataset"
    assert sorted(p.name for p in root.iterdir()) == ["with_mask", "without_mask"]
    for name, content in entries.items():
        assert (downloads / "extracted" / sha256(body) / name).read_bytes() == content
    # the cached zip and its sidecar, keyed by the URL's sha256; no temp files left
    key = sha256(server.url("/a.zip").encode())
    assert (downloads / f"{key}.zip").read_bytes() == body
    meta = json.loads((downloads / f"{key}.json").read_text())
    assert meta["sha256"] == sha256(body) and meta["etag"] == '"v1"'
    assert not list(downloads.glob(".*")) and not list((downloads / "extracted").glob(".*"))
    assert data.pin_report is None


def test_conditional_get_reuses_cache_then_fetches_changed_content(server: Server, tmp_path: Path) -> None:
    body1 = zip_of(dataset_entries(seed=1))
    route = Route(body1, etag='"v1"')
    server.routes["/d.zip"] = route
    downloads = tmp_path / "dl"
    url = server.url("/d.zip")

    first = fetch(url, downloads)
    key = sha256(url.encode())
    cached = downloads / f"{key}.zip"
    inode, mtime = cached.stat().st_ino, cached.stat().st_mtime_ns
    assert "If-None-Match" not in server.requests[0][1]

    second = fetch(url, downloads)
    assert route.statuses == [200, 304]
    assert server.requests[1][1].get("If-None-Match") == '"v1"'
    assert server.requests[1][1].get("If-Modified-Since") == "Mon, 01 Jan 2024 00:00:00 GMT"
    assert second == first
    assert (cached.stat().st_ino, cached.stat().st_mtime_ns) == (inode, mtime)  # reused, not rewritten

    body2 = zip_of({**dataset_entries(seed=2), "Repo-abc/dataset/with_mask/new.png": png(4242)})
    route.body, route.etag = body2, '"v2"'
    third = fetch(url, downloads)
    assert route.statuses == [200, 304, 200]
    assert third.fingerprint == sha256(body2) != first.fingerprint
    assert third.etag == '"v2"'
    assert (Path(third.root) / "with_mask" / "new.png").read_bytes() == png(4242)
    assert cached.read_bytes() == body2
    assert json.loads((downloads / f"{key}.json").read_text())["etag"] == '"v2"'


def test_cache_whose_file_changed_is_not_trusted(server: Server, tmp_path: Path) -> None:
    body = zip_of(dataset_entries())
    route = Route(body)
    server.routes["/c.zip"] = route
    downloads = tmp_path / "dl"
    url = server.url("/c.zip")
    fetch(url, downloads)
    cached = downloads / f"{sha256(url.encode())}.zip"
    cached.write_bytes(body[:-1] + bytes([body[-1] ^ 1]))  # same size, different bytes

    data = fetch(url, downloads)
    assert "If-None-Match" not in server.requests[1][1]  # not conditional: the cache was rejected
    assert route.statuses == [200, 200]
    assert data.fingerprint == sha256(body) and cached.read_bytes() == body


def test_html_response_is_refused(server: Server, tmp_path: Path) -> None:
    server.routes["/page"] = Route(b"<!DOCTYPE html><html><body>Sign in</body></html>", content_type="text/html")
    downloads = tmp_path / "dl"
    with pytest.raises(SourceError, match="HTML") as exc:
        fetch(server.url("/page"), downloads)
    assert server.url("/page") in str(exc.value)
    assert not list(downloads.glob("*.zip")) and not list(downloads.glob(".*"))


def test_response_that_is_not_a_zip_is_refused(server: Server, tmp_path: Path) -> None:
    server.routes["/blob"] = Route(b"\x00\x01 just some bytes", content_type="application/octet-stream")
    with pytest.raises(SourceError, match="did not return a zip"):
        fetch(server.url("/blob"), tmp_path / "dl")


def test_http_404_is_reported_without_retrying(server: Server, tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="HTTP 404") as exc:
        fetch(server.url("/missing.zip"), tmp_path / "dl", retries=3)
    assert server.url("/missing.zip") in str(exc.value)
    assert len(server.requests) == 1


def test_server_error_then_success_is_retried(server: Server, tmp_path: Path) -> None:
    body = zip_of(dataset_entries())
    route = Route(body, fail_first=1)
    server.routes["/flaky.zip"] = route
    data = fetch(server.url("/flaky.zip"), tmp_path / "dl", retries=3)
    assert route.statuses == [500, 200]
    assert data.fingerprint == sha256(body)


def test_persistent_server_error_gives_up_after_retries(server: Server, tmp_path: Path) -> None:
    route = Route(zip_of(dataset_entries()), fail_first=99, fail_status=503)
    server.routes["/down.zip"] = route
    with pytest.raises(SourceError, match="HTTP 503") as exc:
        fetch(server.url("/down.zip"), tmp_path / "dl", retries=2)
    assert route.statuses == [503, 503]
    assert server.url("/down.zip") in str(exc.value)


def test_connection_refused_names_the_env_var(tmp_path: Path) -> None:
    url = f"http://127.0.0.1:{free_port()}/data.zip"
    with pytest.raises(SourceError) as exc:
        fetch(url, tmp_path / "dl", retries=2)
    message = str(exc.value)
    assert "MASKCLS_DATA_SOURCE" in message and "network seems unavailable" in message
    assert url in message


def test_connection_refused_falls_back_to_a_verified_cached_download(tmp_path: Path) -> None:
    s = Server()
    body = zip_of(dataset_entries())
    s.routes["/a.zip"] = Route(body)
    url = s.url("/a.zip")
    try:
        first = fetch(url, tmp_path / "dl")
    finally:
        s.stop()
    second = fetch(url, tmp_path / "dl", retries=1)
    assert second == first


def test_server_outage_falls_back_to_a_verified_cached_download(server: Server, tmp_path: Path) -> None:
    route = Route(zip_of(dataset_entries()))
    server.routes["/a.zip"] = route
    first = fetch(server.url("/a.zip"), tmp_path / "dl")
    route.fail_first = 99
    assert fetch(server.url("/a.zip"), tmp_path / "dl", retries=2) == first
    assert route.statuses == [200, 500, 500]


def test_slow_server_times_out(server: Server, tmp_path: Path) -> None:
    route = Route(zip_of(dataset_entries()), delay=5.0)
    server.routes["/slow.zip"] = route
    with pytest.raises(SourceError, match="timed out") as exc:
        fetch(server.url("/slow.zip"), tmp_path / "dl", timeout=0.2, retries=2)
    assert server.url("/slow.zip") in str(exc.value) and "0.2 s" in str(exc.value)
    assert len(server.requests) == 2
    assert not list((tmp_path / "dl").glob("*.zip"))


def test_progress_bar_stays_out_of_non_terminal_output(
    server: Server, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    server.routes["/a.zip"] = Route(zip_of(dataset_entries()))
    fetch_source(server.url("/a.zip"), tmp_path / "dl", progress=True)
    out, err = capfd.readouterr()
    assert out == "" and err == ""


@pytest.mark.parametrize("enabled", [True, False])
def test_progress_bar_on_a_terminal(
    enabled: bool, server: Server, tmp_path: Path, capfd: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TTY_COMPATIBLE", "1")  # rich >= 14 then treats stderr as a terminal
    monkeypatch.setenv("FORCE_TERMINAL", "1")  # older rich
    server.routes["/a.zip"] = Route(zip_of(dataset_entries()))
    fetch_source(server.url("/a.zip"), tmp_path / "dl", progress=enabled)
    out, err = capfd.readouterr()
    assert out == ""
    assert ("download" in err) is enabled


# --------------------------------------------------------------------------- local zips


def test_local_zip_is_extracted_once_and_reused(tmp_path: Path) -> None:
    body = zip_of(dataset_entries())
    zpath = tmp_path / "data.zip"
    zpath.write_bytes(body)
    downloads = tmp_path / "dl"

    first = fetch(str(zpath), downloads)
    assert first.kind == "zip" and first.fingerprint == sha256(body)
    assert Path(first.root) == downloads / "extracted" / sha256(body) / "Repo-abc" / "dataset"
    marker = Path(first.root) / "marker"
    marker.write_text("still here")

    second = fetch(f"file://{zpath}", downloads)
    assert second.kind == "zip" and second.root == first.root and second.fingerprint == first.fingerprint
    assert marker.read_text() == "still here"


def test_empty_source_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_files(tmp_path, {"a/x.png": png(1), "b/y.png": png(2)})
    monkeypatch.chdir(tmp_path)  # "" must not silently mean the current folder
    with pytest.raises(SourceError, match="empty"):
        fetch("  ", tmp_path / "dl")


def test_missing_local_path_is_named(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere" / "data.zip"
    with pytest.raises(SourceError, match="does not exist") as exc:
        fetch(str(missing), tmp_path / "dl")
    assert str(missing) in str(exc.value)


def _corrupt_last_entry(entries: dict[str, bytes]) -> bytes:
    body = bytearray(zip_of(entries, zipfile.ZIP_STORED))
    payload = list(entries.values())[-1]
    at = body.index(payload) + len(payload) // 2
    body[at] ^= 0xFF
    return bytes(body)


BAD_ZIPS: dict[str, tuple[Callable[[Path], bytes], str]] = {
    "zip-slip": (lambda t: zip_of({**dataset_entries(), "../evil.png": png(1)}), "climb out of the target"),
    "absolute": (lambda t: zip_of({**dataset_entries(), f"{t}/abs-evil.png": png(1)}), "absolute path"),
    "symlink": (lambda t: zip_of(dataset_entries(), links={"Repo-abc/dataset/with_mask/link.png": "/etc/passwd"}),
                "symbolic link"),
    "empty": (lambda t: zip_of({}), "empty zip"),
    "not-a-zip": (lambda t: b"this is not a zip at all" * 10, "not a valid zip"),
    "truncated": (lambda t: zip_of(dataset_entries())[:-30], "not a valid zip"),
    "crc": (lambda t: _corrupt_last_entry({**dataset_entries(), "Repo-abc/z.bin": b"payload" * 50}), "CRC"),
    "file-folder-clash": (lambda t: zip_of({**dataset_entries(), "Repo-abc/x": b"f", "Repo-abc/x/y.png": png(1)}),
                          "Cannot extract"),
    "encrypted": (lambda t: flag_encrypted(zip_of(dataset_entries(), zipfile.ZIP_STORED)), r"encrypted \(password"),
}


@pytest.mark.parametrize("case", sorted(BAD_ZIPS))
def test_bad_zip_is_refused_and_nothing_is_left(case: str, tmp_path: Path) -> None:
    build, expected = BAD_ZIPS[case]
    work = tmp_path / "work"
    work.mkdir()
    zpath = work / "bad.zip"
    zpath.write_bytes(build(tmp_path))
    downloads = work / "dl"
    with pytest.raises(SourceError, match=expected) as exc:
        fetch(str(zpath), downloads)
    assert str(zpath) in str(exc.value)
    assert_nothing_extracted(downloads)
    written = [p for p in tmp_path.rglob("*") if p.name in ("evil.png", "abs-evil.png") or p.is_symlink()]
    assert written == []


def test_oversize_archive_is_refused(tmp_path: Path) -> None:
    zpath = tmp_path / "big.zip"
    zpath.write_bytes(zip_of(dataset_entries()))
    downloads = tmp_path / "dl"
    with pytest.raises(SourceError, match="declare .* bytes uncompressed, more than the 100 bytes allowed") as exc:
        fetch(str(zpath), downloads, max_extract_bytes=100)
    assert str(zpath) in str(exc.value)
    assert_nothing_extracted(downloads)


def test_zip_whose_headers_understate_sizes_is_stopped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bomb whose headers understate its sizes gets no further than the declared sizes."""
    zpath = tmp_path / "bomb.zip"
    zpath.write_bytes(zip_of(dataset_entries()))
    real_infolist = zipfile.ZipFile.infolist

    def lying_infolist(self: zipfile.ZipFile) -> list[zipfile.ZipInfo]:
        infos = real_infolist(self)
        for info in infos:
            info.file_size = 1
        return infos

    monkeypatch.setattr(zipfile.ZipFile, "infolist", lying_infolist)
    # zipfile stops each entry at its declared size, and the truncated entry then fails its CRC
    with pytest.raises(SourceError, match="Bad CRC"):
        fetch(str(zpath), tmp_path / "dl", max_extract_bytes=200)
    assert_nothing_extracted(tmp_path / "dl")


# --------------------------------------------------------------------------- folders


def test_folder_is_used_in_place_with_a_stat_fingerprint(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "faces", {"with_mask/a.png": png(1), "without_mask/b.png": png(2)})
    downloads = tmp_path / "dl"
    data = fetch(str(folder), downloads)
    assert data.kind == "folder" and Path(data.root) == folder.resolve()
    assert not downloads.exists()  # nothing copied
    assert fetch(str(folder), downloads).fingerprint == data.fingerprint

    st = (folder / "with_mask/a.png").stat()
    os.utime(folder / "with_mask/a.png", ns=(st.st_atime_ns, st.st_mtime_ns + 1_000_000))
    touched = fetch(str(folder), downloads).fingerprint
    assert touched != data.fingerprint

    (folder / "without_mask/c.png").write_bytes(png(3))
    assert fetch(str(folder), downloads).fingerprint not in (data.fingerprint, touched)


def test_folder_with_symlink_outside_is_refused(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "faces", {"with_mask/a.png": png(1), "without_mask/b.png": png(2)})
    outside = tmp_path / "secret.png"
    outside.write_bytes(png(3))
    link = folder / "with_mask" / "link.png"
    link.symlink_to(outside)
    with pytest.raises(SourceError, match="points outside") as exc:
        fetch(str(folder), tmp_path / "dl")
    assert str(link) in str(exc.value)


def test_folder_with_symlinked_folder_outside_is_refused(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "faces", {"with_mask/a.png": png(1)})
    other = write_files(tmp_path / "elsewhere", {"b.png": png(2)})
    (folder / "without_mask").symlink_to(other, target_is_directory=True)
    with pytest.raises(SourceError, match="without_mask"):
        fetch(str(folder), tmp_path / "dl")


def test_folder_with_symlink_inside_is_accepted(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "faces", {"with_mask/a.png": png(1), "without_mask/b.png": png(2)})
    (folder / "with_mask" / "again.png").symlink_to(folder / "without_mask" / "b.png")
    data = fetch(str(folder), tmp_path / "dl")
    assert Path(data.root) == folder.resolve()


def test_folder_without_class_folders_says_what_layout_is_expected(tmp_path: Path) -> None:
    folder = write_files(tmp_path / "flat", {"a.png": png(1), "only_one_class/b.png": png(2), "notes/x.txt": b"x"})
    with pytest.raises(SourceError, match="one sub-folder per class") as exc:
        fetch(str(folder), tmp_path / "dl")
    assert str(folder) in str(exc.value)


# --------------------------------------------------------------------------- find_class_root


def test_find_class_root_skips_hidden_and_macosx_folders(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "__MACOSX/a/._x.png": b"junk", "__MACOSX/b/._y.png": b"junk",
        ".cache/a/x.png": png(1), ".cache/b/y.png": png(2),
        "repo/inner/cats/x.JPG": png(3), "repo/inner/dogs/y.Png": png(4),
        "repo/inner/.hidden/z.png": png(5),
    })
    assert find_class_root(tmp_path) == tmp_path / "repo" / "inner"


def test_find_class_root_prefers_dataset_folder(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "examples/a/x.png": png(1), "examples/b/y.png": png(2),  # shallower, but not the data
        "repo/dataset/with_mask/x.jpeg": png(3), "repo/dataset/without_mask/y.webp": png(4),
    })
    assert find_class_root(tmp_path) == tmp_path / "repo" / "dataset"


def test_find_class_root_returns_the_folder_itself_when_it_holds_classes(tmp_path: Path) -> None:
    write_files(tmp_path, {"a/x.png": png(1), "b/y.png": png(2),
                           "b/deeper/c/z.png": png(3), "b/deeper/d/z.png": png(4)})
    assert find_class_root(tmp_path) == tmp_path


def test_find_class_root_keeps_train_test_split_together(tmp_path: Path) -> None:
    write_files(tmp_path, {
        "data/train/with_mask/a.png": png(1), "data/train/without_mask/b.png": png(2),
        "data/test/with_mask/c.png": png(3), "data/test/without_mask/d.png": png(4),
    })
    assert find_class_root(tmp_path) == tmp_path / "data"


def test_find_class_root_refuses_ambiguous_layouts(tmp_path: Path) -> None:
    write_files(tmp_path, {"one/a/x.png": png(1), "one/b/y.png": png(2), "two/a/x.png": png(3), "two/b/y.png": png(4)})
    with pytest.raises(SourceError, match="several sets of class folders"):
        find_class_root(tmp_path)


def test_find_class_root_ignores_non_image_files(tmp_path: Path) -> None:
    write_files(tmp_path, {"a/x.txt": b"x", "b/y.csv": b"y"})
    with pytest.raises(SourceError, match="one sub-folder per class"):
        find_class_root(tmp_path)


# --------------------------------------------------------------------------- pins


def _pin_for(root: Path, pin_path: Path) -> Path:
    files = {p.relative_to(root).as_posix(): sha256(p.read_bytes()) for p in root.rglob("*") if p.is_file()}
    pin_path.write_text(json.dumps({"source": "test", "absent_here": [], "files": files}))
    return pin_path


@pytest.fixture
def pinned(tmp_path: Path) -> tuple[Path, Path]:
    root = write_files(tmp_path / "data", {
        "with_mask/a b é.png": png(1), "with_mask/c.jpg": png(2), "without_mask/d.png": png(3),
    })
    return root, _pin_for(root, tmp_path / "pin.json")


def test_pin_passes_and_reports_extra_files(pinned: tuple[Path, Path]) -> None:
    root, pin = pinned
    assert verify_pin(root, pin) == {"checked": 3, "extra": []}
    (root / "without_mask" / "new.png").write_bytes(png(9))
    assert verify_pin(root, pin) == {"checked": 3, "extra": ["without_mask/new.png"]}


def test_pin_reports_missing_file(pinned: tuple[Path, Path]) -> None:
    root, pin = pinned
    (root / "with_mask" / "c.jpg").unlink()
    with pytest.raises(SourceError, match="1 are missing and 0 have a different sha256") as exc:
        verify_pin(root, pin)
    assert "with_mask/c.jpg (missing)" in str(exc.value) and pin.name in str(exc.value)


def test_pin_reports_altered_file(pinned: tuple[Path, Path]) -> None:
    root, pin = pinned
    (root / "without_mask" / "d.png").write_bytes(png(4))
    with pytest.raises(SourceError, match="0 are missing and 1 have a different sha256") as exc:
        verify_pin(root, pin)
    assert "without_mask/d.png (different sha256)" in str(exc.value)


def test_pin_lists_at_most_ten_problems(tmp_path: Path) -> None:
    root = write_files(tmp_path / "data", {f"a/{i:02d}.png": png(i) for i in range(15)})
    pin = _pin_for(root, tmp_path / "pin.json")
    for p in (root / "a").iterdir():
        p.unlink()
    with pytest.raises(SourceError, match="and 5 more") as exc:
        verify_pin(root, pin)
    assert "15 are missing" in str(exc.value) and "a/14.png" not in str(exc.value)


def test_fetch_source_applies_the_pin(pinned: tuple[Path, Path], tmp_path: Path) -> None:
    root, pin = pinned
    data = fetch(str(root), tmp_path / "dl", pin=pin)
    assert data.pin_report == {"checked": 3, "extra": []}
    (root / "with_mask" / "c.jpg").write_bytes(b"changed")
    with pytest.raises(SourceError, match="different sha256"):
        fetch(str(root), tmp_path / "dl", pin=pin)


def test_pin_applies_to_a_downloaded_archive(server: Server, tmp_path: Path) -> None:
    entries = dataset_entries()
    server.routes["/a.zip"] = Route(zip_of(entries))
    files = {k.removeprefix("Repo-abc/dataset/"): sha256(v) for k, v in entries.items() if "/dataset/" in k}
    pin = tmp_path / "pin.json"
    pin.write_text(json.dumps({"source": "test", "absent_here": [], "files": files}))
    data = fetch(server.url("/a.zip"), tmp_path / "dl", pin=pin)
    assert data.pin_report == {"checked": 4, "extra": []}


def test_real_pin_matches_the_shared_dataset() -> None:
    report = verify_pin(SHARED, DEFAULT_PIN)
    assert report["checked"] == 3832
    assert report["extra"] == ["SOURCE.md", "manifest.json"]
    absent = json.loads(DEFAULT_PIN.read_text())["absent_here"]
    assert absent == ["with_mask/with_mask057.jpg"] and not (SHARED / absent[0]).exists()


def test_shared_dataset_as_folder_source(tmp_path: Path) -> None:
    data = fetch(str(SHARED), tmp_path / "dl", pin=DEFAULT_PIN)
    assert data.kind == "folder" and Path(data.root) == SHARED.resolve()
    assert data.pin_report is not None and data.pin_report["checked"] == 3832


def test_source_data_is_frozen() -> None:
    data = SourceData(source="x", kind="folder", root="/x", fingerprint="f")
    with pytest.raises(Exception):
        data.root = "/y"  # type: ignore[misc]
