"""maskcls.origins: every file of the shared data has a family; docs/origins.md is current."""

from __future__ import annotations

import json
from collections import defaultdict

import pytest

from benchmarks.origins_table import DOC, document
from maskcls.config import DEFAULT_PIN
from maskcls.origins import FAMILIES, family_of, markdown, table

PIN_FILES = list(json.loads(DEFAULT_PIN.read_text())["files"])


def test_every_file_of_the_shared_data_has_a_family_of_one_class() -> None:
    assert len(PIN_FILES) > 3800
    classes = defaultdict(set)
    for path in PIN_FILES:
        family = family_of(path)
        assert family is not None, path
        classes[family].add(path.split("/")[0])
    assert set(classes) == set(FAMILIES)
    assert all(len(c) == 1 for c in classes.values()), classes


@pytest.mark.parametrize(("path", "family"), [
    ("with_mask/with_mask123.jpg", "web_masked"),
    ("with_mask/0_0_0 copy 10.jpg", "masked_copies"),
    ("with_mask/0_0_3 copy 2 2.jpg", "masked_copies"),
    ("with_mask/0_0_17 copy.jpeg", "masked_copies"),
    ("with_mask/0_0_17.jpg", "masked_crops"),
    ("with_mask/1_0_006LvDhLly1g790l6enetj30hs0pidh3.jpg", "masked_crops"),
    ("with_mask/12.jpg", "masked_numbered"),
    ("without_mask/12.jpg", "unmasked_numbered"),
    ("without_mask/augmented_image_7.jpg", "unmasked_augmented"),
    ("without_mask/1_0_qiqi_0001.jpg", "unmasked_named_1_0"),
    ("without_mask/0_0_anhu_0042.jpg", "unmasked_named_0_0"),
    ("train/without_mask/0_0_anhu_0042.jpg", "unmasked_named_0_0"),
    ("with_mask/photo.jpg", None),
    ("other/12.jpg", None),
])
def test_family_of_a_name(path: str, family: str | None) -> None:
    assert family_of(path) == family


def test_table_counts_per_class_and_lists_the_unmatched() -> None:
    rows = table([("a/with_mask1.jpg", "a"), ("a/with_mask2.png", "a"), ("b/x.jpg", "b")], ["a", "b"])
    assert rows[0] == {"pattern": "with_maskNNN", "family": "web_masked", "a": 2, "b": 0, "total": 2}
    assert rows[-1]["family"] == "(none)" and rows[-1]["b"] == 1
    assert "| **all** | | 2 | 1 | 3 |" in markdown(rows, ["a", "b"])


def test_docs_origins_md_is_what_the_command_generates() -> None:
    assert DOC.read_text() == document(), "run .venv/bin/python -m benchmarks.origins_table"


def test_the_origins_bench_part_runs_only_when_asked_for_and_has_its_targets() -> None:
    from benchmarks.run import plan, targets

    assert "origins" not in plan(None)
    assert plan("origins") == ["origins"]
    result = {"origins_wall_s": 2000.0, "origins_runs": {"a": {"recall": 0.97}, "b": {"recall": 0.94}}}
    assert targets(result) == {"origins<=40min": True, "origin_recall>=0.95": False}
