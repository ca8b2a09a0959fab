"""Cache keys of the pipeline's stages.

A stage's key is: the fingerprints of its inputs + its own config + the code version of
that stage (a hash of the project modules it and the stages before it import, see
``tasks.codeversion``). Prefect's DEFAULT policy includes the run id, and TASK_SOURCE
sees only the task function's own text, so neither is right here.

Before a cached result is trusted its output files are checked: a hit whose file is
gone or no longer matches its fingerprint is dropped, so the task recomputes it.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect.cache_policies import CachePolicy
from prefect.context import TaskRunContext
from prefect.logging import get_logger
from pydantic import BaseModel

from tasks.codeversion import stage_code_version

logger = get_logger("maskcls.cache")


def _jsonable(value: Any) -> Any:
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    return value


def input_digest(value: Any) -> str:
    """Stable hash of a task input (pydantic records hash by content, not by pickle)."""
    return hashlib.sha256(json.dumps(_jsonable(value), sort_keys=True, default=str).encode()).hexdigest()


@dataclass
class StageCache(CachePolicy):
    """Key = stage name + the stage's code version + digests of the named inputs (its config among them)."""

    stage: str = ""
    inputs: tuple[str, ...] = ()

    def compute_key(
        self,
        task_ctx: TaskRunContext,
        inputs: dict[str, Any],
        flow_parameters: dict[str, Any],
        **kwargs: Any,
    ) -> str | None:
        parts = {
            "stage": self.stage,
            "code": stage_code_version(self.stage),
            "inputs": {name: input_digest(inputs.get(name)) for name in self.inputs},
        }
        key = f"{self.stage}-{hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:40]}"
        _drop_if_stale(task_ctx, key)
        return key


def _drop_if_stale(task_ctx: TaskRunContext | None, key: str) -> None:
    """Delete a cached record whose output files are gone or altered, so the task reruns."""
    if task_ctx is None:
        return
    store = task_ctx.result_store
    basepath = getattr(store.result_storage, "basepath", None)
    if basepath is None:
        return
    path = Path(basepath) / key
    if not path.exists():
        return
    try:
        record = store.read(key)
        value = record.result
    except Exception as exc:  # noqa: BLE001 - an unreadable record is as good as none
        logger.warning("cached result %s is unreadable (%s); recomputing", key, exc)
        path.unlink(missing_ok=True)
        return
    verify = getattr(value, "verify", None)
    if callable(verify) and not verify():
        logger.warning("cached result %s points at a missing or altered file; recomputing", key)
        path.unlink(missing_ok=True)


def source_identity(source: str) -> str:
    """A cheap identity of a raw source, for the download stage's key.

    A folder: (relative path, size, mtime) of every file, so a changed image is noticed.
    A local file: its size and mtime. A URL: what the server says of it now (ETag,
    Last-Modified, length), so new data behind the same URL reruns the download; later
    stages are keyed on the content itself.
    """
    if source.startswith(("http://", "https://")):
        return url_identity(source)
    path = Path(source.removeprefix("file://")).expanduser()
    if path.is_dir():
        h = hashlib.sha256(str(path.resolve()).encode())
        for root, dirs, files in os.walk(path):
            dirs.sort()
            for name in sorted(files):
                p = Path(root) / name
                try:
                    st = p.stat()
                except OSError:
                    continue
                h.update(f"{p.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return h.hexdigest()
    if path.is_file():
        st = path.stat()
        return f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}"
    return source


def sources_identity(parts: list[str]) -> str:
    """The identity of a source of several parts: every part's text and ``source_identity`` of its
    location, so a change in any part reruns the download. One plain part keeps its own identity."""
    from maskcls.multisource import parse_part

    parsed = [parse_part(p) for p in parts]
    if len(parsed) == 1 and parsed[0].plain:
        return source_identity(parsed[0].location)
    payload = [[p.text, source_identity(p.location.removeprefix("file://") if p.voc else p.location)]
               for p in parsed]
    return hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def url_identity(url: str, timeout: float = 10.0) -> str:
    """The URL plus the validators its server reports right now (asked on every run).

    Unreachable servers give the bare URL: a cached download of it is then used, and
    without one the download stage fails with a message that names the URL.
    """
    import httpx

    try:
        resp = httpx.head(url, timeout=timeout, follow_redirects=True)
        if resp.status_code == 405:  # HEAD not allowed: ask for nothing but the headers
            with httpx.stream("GET", url, timeout=timeout, follow_redirects=True) as r:
                resp = r
        headers = resp.headers
        return "|".join([url, str(resp.status_code), headers.get("etag", ""), headers.get("last-modified", ""),
                         headers.get("content-length", "")])
    except httpx.HTTPError as exc:
        logger.warning("could not ask %s for changes (%s); using what is cached", url, exc)
        return url
