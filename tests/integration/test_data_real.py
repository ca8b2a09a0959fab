"""Validation and the split on the whole shared dataset (no training)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pytest

from maskcls.config import load_config
from maskcls.data import cluster, split, validate
from tests.support.data import SHARED

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def manifest():
    return validate(SHARED, load_config("default").data)


def test_validation_counts_match_the_dataset_notes(manifest):
    # SOURCE.md: 1,874 unique with mask, 1,873 without, 85 extra byte-identical copies.
    assert manifest.counts == {"with_mask": 1874, "without_mask": 1873}
    assert len(manifest.duplicates) == 85
    assert {s.path for s in manifest.skipped} == {"SOURCE.md", "manifest.json"}


def test_no_near_duplicate_cluster_spans_two_sides(manifest):
    cfg = load_config("default").data
    result = split(manifest, cfg)
    side_of = {i.sha256: side for side in ("train", "val", "test") for i in result.side(side)}
    groups = cluster(manifest.items, cfg.phash_threshold)
    sides_per_cluster: dict[int, set[str]] = defaultdict(set)
    for item, g in zip(manifest.items, groups):
        sides_per_cluster[g].add(side_of[item.sha256])
    multi = [g for g, n in Counter(groups).items() if n > 1]
    assert len(multi) > 100  # the shared data hold ~150 near-duplicate clusters
    assert all(len(sides_per_cluster[g]) == 1 for g in sides_per_cluster)
    # stratified: each class is held out in about the configured share
    for c in manifest.classes:
        total = sum(1 for i in manifest.items if i.label == c)
        test = sum(1 for i in result.test if i.label == c)
        assert abs(test / total - cfg.test_fraction) < 0.04, (c, test / total)


def test_every_profile_has_the_same_test_side(manifest):
    tests = {}
    for profile in ("default", "seed"):
        tests[profile] = {i.sha256 for i in split(manifest, load_config(profile).data).test}
    assert tests["default"] == tests["seed"]
    smoke = {i.sha256 for i in split(manifest, load_config("smoke").data).test}
    assert smoke and smoke <= tests["default"]


def test_seed_profile_augments_32x_its_training_images(manifest):
    result = split(manifest, load_config("seed").data)
    n_train = len(result.train)
    # about 2,400 training images -> about 77,000 samples, as DESIGN.md says
    assert 2200 <= n_train <= 2700


def test_the_three_class_sources_split_leak_free(tmp_path_factory):
    """Every shared source at once, as the three-class profile reads them: no near-duplicate
    cluster spans two sides across sources, a scene photo's faces share a side, and so do a
    person's files; only `tune` scene photos are cut."""
    import csv
    from pathlib import Path

    from maskcls.data import source_group
    from maskcls.multisource import fetch_sources, training_source

    shared = SHARED.parent
    config = load_config("three-class")
    parts = training_source(None, config.sources, shared, "")
    raw = fetch_sources(parts, tmp_path_factory.mktemp("dl"), crop_margin=config.data.crop_margin, progress=False)
    assert raw.licences == ["CC BY-NC-SA 4.0"]
    everything = validate(raw.root, config.data)
    assert everything.classes == ["mask_weared_incorrect", "with_mask", "without_mask"]
    result = split(everything, config.data)
    side_of = {i.sha256: side for side in ("train", "val", "test") for i in result.side(side)}

    sides: dict[str, set[str]] = defaultdict(set)
    for item, g in zip(everything.items, cluster(everything.items, config.data.phash_threshold)):
        sides[f"cluster {g}"].add(side_of[item.sha256])
        if (group := source_group(item.path)) is not None:
            sides[group].add(side_of[item.sha256])
    spanning = {g: s for g, s in sides.items() if len(s) > 1}
    assert not spanning, list(spanning)[:10]
    photos = {g.split("~", 1)[1] for g in sides if g.startswith("face-mask-scenes-tune~")}
    persons = {g for g in sides if g.startswith("face-mask-incorrect~")}
    with (shared / "face-mask-scenes" / "splits.csv").open(newline="") as fh:
        part = {Path(r["image"]).stem: r["part"] for r in csv.DictReader(fh)}
    assert len(photos) > 100 and {part[p] for p in photos} == {"tune"}
    assert len(persons) > 100
    # the face-mask images are all there, and every class is on both the train and test sides
    assert sum(1 for i in everything.items if i.path.split("/", 1)[1].startswith("face-mask~")) >= 3700
    counts = result.counts()
    assert all(counts[side][c] > 0 for side in ("train", "test") for c in everything.classes), counts
