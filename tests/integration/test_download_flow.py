"""The flow on an http(s) zip source served from 127.0.0.1: the download stage asks the
server on every run, and new data behind the same URL is noticed."""

from __future__ import annotations

import hashlib
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from tests.support.zips import zip_of_folder

pytestmark = pytest.mark.integration


class ZipServer:
    """Serves one zip with an ETag; answers HEAD and conditional GETs; counts requests."""

    def __init__(self, payload: bytes) -> None:
        self.payload = payload
        self.requests: list[str] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def _headers(self, code: int, body: int) -> None:
                self.send_response(code)
                self.send_header("Content-Type", "application/zip")
                self.send_header("ETag", server.etag)
                self.send_header("Content-Length", str(body))
                self.end_headers()

            def do_HEAD(self):
                server.requests.append("HEAD")
                self._headers(200, len(server.payload))

            def do_GET(self):
                if self.headers.get("If-None-Match") == server.etag:
                    server.requests.append("GET 304")
                    self._headers(304, 0)
                    return
                server.requests.append("GET 200")
                self._headers(200, len(server.payload))
                self.wfile.write(server.payload)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def etag(self) -> str:
        return '"' + hashlib.sha256(self.payload).hexdigest()[:16] + '"'

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/archive.zip"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def test_url_source_is_asked_every_run_and_new_data_is_noticed(servers, fresh_subset, tmp_path):
    import shutil

    from flows.train import train_flow

    data = tmp_path / "data"
    shutil.copytree(fresh_subset, data)
    srv = ZipServer(zip_of_folder(data, "Repo-abc123/dataset"))
    try:
        first = train_flow(profile="smoke", source=srv.url)
        assert first["stages"]["download"] == "Completed"
        assert "GET 200" in srv.requests
        srv.requests.clear()

        again = train_flow(profile="smoke", source=srv.url)
        assert srv.requests, "the server was not asked on the second run"
        assert "GET 200" not in srv.requests
        assert set(again["stages"].values()) == {"Cached"}
        assert again["dataset_fingerprint"] == first["dataset_fingerprint"]

        # New data behind the same URL: one more image per class.
        for cls in ("with_mask", "without_mask"):
            src = sorted((data / cls).iterdir())[0]
            (data / cls / f"new_{src.name}").write_bytes(src.read_bytes() + b"\0new")
        srv.payload = zip_of_folder(data, "Repo-abc123/dataset")
        srv.requests.clear()
        changed = train_flow(profile="smoke", source=srv.url)
        assert "GET 200" in srv.requests
        assert changed["stages"]["download"] == "Completed"
        assert changed["stages"]["validate"] == "Completed"
        assert changed["dataset_fingerprint"] != first["dataset_fingerprint"]
    finally:
        srv.close()
