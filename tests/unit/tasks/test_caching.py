"""StageCache: a stage's key is its name + its code version + the digests of its named inputs
(its own config among them), and a cached record whose files are gone or altered is dropped."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from prefect.filesystems import LocalFileSystem
from prefect.results import ResultStore

from maskcls.config import load_config
from maskcls.store import Store
from tasks import caching
from tasks.caching import StageCache, input_digest
from tasks.records import AugmentedRecord


@pytest.fixture
def versions(monkeypatch) -> dict[str, str]:
    """Code versions the policy reads, per stage; tests change them."""
    table = {"augment": "a" * 16, "train": "b" * 16}
    monkeypatch.setattr(caching, "stage_code_version", lambda name: table[name])
    return table


def _key(policy: StageCache, task_ctx=None, **inputs) -> str:
    return policy.compute_key(task_ctx, inputs, {})


def test_key_covers_named_inputs_config_and_code_version(versions) -> None:
    policy = StageCache(stage="augment", inputs=("arrays", "cfg"))
    cfg = load_config("smoke").augment
    key = _key(policy, arrays={"x": 1}, cfg=cfg, settings="home-1")
    assert key.startswith("augment-")
    assert _key(policy, arrays={"x": 1}, cfg=cfg, settings="home-2") == key, "unnamed inputs stay out"
    assert _key(policy, arrays={"x": 2}, cfg=cfg, settings="home-1") != key
    assert _key(policy, arrays={"x": 1}, cfg=cfg.model_copy(update={"shift": cfg.shift + 1})) != key
    versions["augment"] = "c" * 16
    assert _key(policy, arrays={"x": 1}, cfg=cfg) != key
    versions["train"] = "d" * 16  # another stage's version is not this stage's
    changed = _key(policy, arrays={"x": 1}, cfg=cfg)
    versions["train"] = "e" * 16
    assert _key(policy, arrays={"x": 1}, cfg=cfg) == changed


def test_two_stages_with_the_same_inputs_have_different_keys(versions) -> None:
    versions["train"] = versions["augment"]
    a = _key(StageCache(stage="augment", inputs=("arrays",)), arrays=[1])
    t = _key(StageCache(stage="train", inputs=("arrays",)), arrays=[1])
    assert a != t


def test_records_digest_by_content() -> None:
    cfg = load_config("smoke").preprocess
    assert input_digest(cfg) == input_digest(load_config("smoke").preprocess)
    assert input_digest(cfg) != input_digest(cfg.model_copy(update={"size": cfg.size + 1}))
    assert input_digest({"b": 1, "a": Path("/x")}) == input_digest({"a": "/x", "b": 1})


def _results(tmp_path: Path) -> ResultStore:
    return ResultStore(result_storage=LocalFileSystem(basepath=str(tmp_path / "results")))


@pytest.fixture
def cached(tmp_path, versions):
    """A result store holding, under the augment stage's key, a record of one real store file."""
    store = Store(tmp_path / "store")
    ref = store.put_array("augmented", np.arange(8, dtype=np.uint8))
    record = AugmentedRecord(x=ref, y=ref, n_images=1, n_samples=32, preview=None)
    policy = StageCache(stage="augment", inputs=("arrays",))
    key = _key(policy, arrays=1)
    _results(tmp_path).write(record, key=key)
    ctx = SimpleNamespace(result_store=_results(tmp_path))  # a later run's store: nothing held in memory
    return SimpleNamespace(policy=policy, key=key, ctx=ctx, ref=ref, path=tmp_path / "results" / key)


def test_a_valid_cached_record_is_kept(cached) -> None:
    assert _key(cached.policy, cached.ctx, arrays=1) == cached.key
    assert cached.path.exists()


def test_a_record_whose_file_changed_is_dropped(cached) -> None:
    data = Path(cached.ref.path)
    data.write_bytes(data.read_bytes()[:-1] + b"\xff")
    assert _key(cached.policy, cached.ctx, arrays=1) == cached.key
    assert not cached.path.exists()


def test_a_record_whose_file_is_gone_is_dropped(cached) -> None:
    Path(cached.ref.path).unlink()
    _key(cached.policy, cached.ctx, arrays=1)
    assert not cached.path.exists()


def test_an_unreadable_record_is_dropped(cached) -> None:
    cached.path.write_bytes(b"not a result record")
    _key(cached.policy, cached.ctx, arrays=1)
    assert not cached.path.exists()


def test_every_part_of_a_source_is_in_the_download_key(tmp_path: Path) -> None:
    for rel in ("a/with_mask/x.png", "a/without_mask/y.png", "b/with_mask/z.png", "v/images/s.png"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(rel.encode())
    a, b, v = (str(tmp_path / n) for n in "abv")
    # one plain part keeps the identity it always had (the two-class default's key does not move)
    assert caching.sources_identity([a]) == caching.source_identity(a)
    several = caching.sources_identity([a, b, f"voc:{v}?part=tune"])
    assert several != caching.sources_identity([a, b])
    assert several != caching.sources_identity([a, b, f"voc:{v}?part=report"])
    (tmp_path / "v" / "images" / "s.png").write_bytes(b"changed photo")
    assert several != caching.sources_identity([a, b, f"voc:{v}?part=tune"])
    assert caching.sources_identity([a, b]) == caching.sources_identity([a, b])  # stable while nothing changes
    before = caching.sources_identity([a, b])
    (tmp_path / "b" / "with_mask" / "w2.png").write_bytes(b"newer")
    assert caching.sources_identity([a, b]) != before
