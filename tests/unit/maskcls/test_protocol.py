"""The article protocol (data.protocol=article) leaks the way the 2020 article did, and the
leak-free default does not; the held-out origin family split (data.holdout_family)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from maskcls.augment import N_VARIANTS, augment_labels, validation_after_augment
from maskcls.config import DataConfig, load_config
from maskcls.data import DataError, Manifest, cluster, split, validate
from maskcls.errors import ConfigError
from maskcls.origins import family_of
from maskcls.promotion import registration_skipped
from tests.unit.maskcls.test_data import CLASSES, build_families, noisy, smooth_image, write

N_DUPLICATE_PAIRS = 12  # per class


@pytest.fixture(scope="module")
def leaky(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str], Manifest]:
    """Near-duplicate families (original, mirror, noisy copy) plus byte-identical pairs; path -> family."""
    root = tmp_path_factory.mktemp("leaky")
    fam = build_families(root, seed=41)
    for c in CLASSES:
        for k in range(N_DUPLICATE_PAIRS):
            data = (root / f"{c}/f{k:03d}_orig.png").read_bytes()
            write(root / f"{c}/f{k:03d}_zcopy.png", data)  # same bytes: validation keeps one
            fam[f"{c}/f{k:03d}_zcopy.png"] = fam[f"{c}/f{k:03d}_orig.png"]
    manifest = validate(root, DataConfig())
    assert len(manifest.duplicates) == 2 * N_DUPLICATE_PAIRS
    return root, fam, manifest


ARTICLE = DataConfig(protocol="article", val_fraction=0.2)


def sides_of(s) -> dict[str, str]:
    return {i.path: name for name in ("train", "val", "test") for i in s.side(name)}


def test_article_split_keeps_the_exact_duplicates_and_every_file_once(leaky) -> None:
    _, _, manifest = leaky
    s = split(manifest, ARTICLE)
    paths = [i.path for i in s.train + s.val + s.test]
    assert len(paths) == len(set(paths)) == len(manifest.items) + len(manifest.duplicates)
    assert {p for p, _ in manifest.duplicates} <= set(paths)
    assert s.val == [] and s.val_after_augment == 0.2 and s.val_seed == 0


def test_article_split_leaks_an_exact_duplicate_and_near_duplicates_across_sides(leaky) -> None:
    _, fam, manifest = leaky
    article = split(manifest, ARTICLE)
    by_sha: dict[str, set[str]] = {}
    for item in article.train + article.test:
        by_sha.setdefault(item.sha256, set()).add("test" if item in article.test else "train")
    assert any(sides == {"train", "test"} for sides in by_sha.values()), "no exact duplicate pair crosses"
    by_family: dict[str, set[str]] = {}
    for path, side in sides_of(article).items():
        by_family.setdefault(fam[path], set()).add(side)
    crossing = [f for f, sides in by_family.items() if len(sides) > 1]
    assert len(crossing) >= 3
    # The leak-free split of the same data never puts a content or a family on two sides.
    free = split(manifest, DataConfig(val_fraction=0.2))
    shas: dict[str, set[str]] = {}
    fams: dict[str, set[str]] = {}
    for path, side in sides_of(free).items():
        fams.setdefault(fam[path], set()).add(side)
    for name in ("train", "val", "test"):
        for item in free.side(name):
            shas.setdefault(item.sha256, set()).add(name)
    assert all(len(v) == 1 for v in shas.values())
    assert all(len(v) == 1 for v in fams.values())


def test_article_split_holds_out_30_percent_of_files_stratified_by_class_and_seeded(leaky) -> None:
    _, _, manifest = leaky
    s = split(manifest, ARTICLE)
    files = Counter(i.label for i in s.train + s.test)
    test = Counter(i.label for i in s.test)
    for c in CLASSES:
        assert abs(test[c] - 0.3 * files[c]) <= 1, (c, test[c], files[c])
    assert abs(len(s.test) - 0.3 * sum(files.values())) <= 1
    assert sides_of(split(manifest, ARTICLE)) == sides_of(s)
    other = split(manifest, ARTICLE.model_copy(update={"split_seed": 1}))
    assert sides_of(other) != sides_of(s)
    assert other.fingerprint != s.fingerprint
    assert split(manifest, DataConfig(val_fraction=0.2)).fingerprint != s.fingerprint


def test_article_split_with_too_few_files_is_a_data_error_naming_the_protocol(tmp_path: Path) -> None:
    # Three classes of two files: 30% of six files is two test images, too few for three classes.
    rng = np.random.default_rng(3)
    for c in ("a", "b", "c"):
        for k in range(2):
            write(tmp_path / f"{c}/{k}.png", smooth_image(rng))
    manifest = validate(tmp_path, DataConfig(min_per_class=2))
    with pytest.raises(DataError, match="data.protocol=article"):
        split(manifest, DataConfig(protocol="article", min_per_class=2))


def test_validation_after_augmentation_shares_source_images_with_training() -> None:
    n_images = 200
    y = np.array([0] * 120 + [1] * 80)
    y_aug = augment_labels(y)
    train, val = validation_after_augment(y_aug, 0.2, seed=0)
    assert len(np.intersect1d(train, val)) == 0
    assert len(train) + len(val) == n_images * N_VARIANTS
    assert abs(len(val) - 0.2 * len(y_aug)) <= 1
    assert abs(y_aug[val].mean() - y_aug.mean()) < 0.01  # stratified
    # Sample k is a variant of image k // 32: nearly every validation image is also trained on.
    src_val, src_train = set(val // N_VARIANTS), set(train // N_VARIANTS)
    assert len(src_val & src_train) >= 0.95 * len(src_val)
    assert np.array_equal(validation_after_augment(y_aug, 0.2, seed=0)[1], val)


# --- held-out origin family ------------------------------------------------------------------

#: File names of four families (two per class), some images repeated across families.
FAMILY_NAMES = {
    "with_mask": [f"with_mask{k:03d}" for k in range(12)] + [f"0_0_{k} copy {k + 1}" for k in range(12)],
    "without_mask": [f"1_0_qiqi_{k:04d}" for k in range(12)] + [f"0_0_anhu_{k:04d}" for k in range(12)],
}


@pytest.fixture(scope="module")
def origins_data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Manifest, set[str]]:
    """Distinct images named after their family, plus two masked_copies images that are
    noisy near-duplicates of web_masked ones; returns (root, manifest, those two paths)."""
    root = tmp_path_factory.mktemp("origins")
    rng = np.random.default_rng(9)
    images = {}
    for c, names in FAMILY_NAMES.items():
        for name in names:
            images[f"{c}/{name}.png"] = img = smooth_image(rng)
            write(root / f"{c}/{name}.png", img)
    near = set()
    for k in (0, 1):
        rel = f"with_mask/0_0_{100 + k} copy.png"
        write(root / rel, noisy(images[f"with_mask/with_mask{k:03d}.png"], rng))
        near.add(rel)
    return root, validate(root, DataConfig()), near


def test_holdout_split_tests_on_exactly_that_family_and_leaves_its_near_duplicates_out(origins_data) -> None:
    _, manifest, near = origins_data
    cfg = DataConfig(holdout_family="web_masked")
    s = split(manifest, cfg)
    family = {i.path for i in manifest.items if family_of(i.path) == "web_masked"}
    assert len(family) == 12
    assert {i.path for i in s.test} == family
    assert set(s.left_out) == near
    trained = {i.path for i in s.train + s.val}
    assert not trained & (family | near)
    assert trained | family | near == {i.path for i in manifest.items}
    assert {i.label for i in s.train} == set(CLASSES)
    # No near-duplicate cluster spans the test side and training.
    groups = dict(zip((i.path for i in manifest.items), cluster(manifest.items, cfg.phash_threshold)))
    assert not {groups[p] for p in trained} & {groups[p] for p in family}
    assert s.fingerprint != split(manifest, DataConfig(holdout_family="masked_copies")).fingerprint


def test_holdout_of_an_unmasked_family_and_of_a_family_absent_from_the_data(origins_data) -> None:
    _, manifest, _ = origins_data
    s = split(manifest, DataConfig(holdout_family="unmasked_named_0_0"))
    assert {i.path for i in s.test} == {f"without_mask/{n}.png" for n in FAMILY_NAMES["without_mask"][12:]}
    assert s.left_out == []
    with pytest.raises(DataError, match="holdout_family='unmasked_augmented'.*web_masked"):
        split(manifest, DataConfig(holdout_family="unmasked_augmented"))


def test_a_holdout_family_must_be_known_and_not_combined_with_the_article_protocol() -> None:
    with pytest.raises(ConfigError, match="unknown origin family 'nope'.*web_masked"):
        load_config("smoke", {"data.holdout_family": "nope"})
    with pytest.raises(ConfigError, match="cannot be combined"):
        load_config("smoke", {"data.protocol": "article", "data.holdout_family": "web_masked"})
    with pytest.raises(ConfigError, match="data.protocol"):
        load_config("smoke", {"data.protocol": "articel"})


def test_the_protocol_and_the_family_are_in_the_data_section_of_the_cache_key() -> None:
    base = load_config("smoke")
    keys = {load_config("smoke", o).section_hash("data")
            for o in ({}, {"data.protocol": "article"}, {"data.holdout_family": "web_masked"})}
    assert len(keys) == 3 and base.section_hash("data") in keys


def test_article_and_holdout_runs_are_never_registered_and_default_runs_are() -> None:
    assert registration_skipped("leak-free", None) is None
    assert "article" in registration_skipped("article", None)
    assert "web_masked" in registration_skipped("leak-free", "web_masked")




def test_take_to_file_writes_the_chosen_samples_in_order(tmp_path: Path) -> None:
    from maskcls.augment import take_to_file

    x = np.arange(10 * 4, dtype=np.uint8).reshape(10, 2, 2, 1)
    idx = np.array([1, 4, 5, 9])
    take_to_file(x, idx, tmp_path / "out.npy", chunk=3)
    assert np.array_equal(np.load(tmp_path / "out.npy"), x[idx])
