"""The sweep as data, without servers: grid options, points, the shared data stages, the summary."""

from __future__ import annotations

import json

import pytest

from maskcls.config import ConfigError
from maskcls.stages import STAGE_NAMES
from maskcls.sweep import (
    DATA_STAGE_NAMES,
    DEFAULT_GRID,
    EXPORT_FORMAT,
    MAX_POINTS,
    RANKING_RULE,
    SweepError,
    expand_grid,
    export_document,
    failed_points,
    override_text,
    parse_grid,
    plan_sweep,
    point_label,
    point_row,
    shared_stage,
    split_values,
    summarize,
    summary_markdown,
    summary_metrics,
    summary_tags,
    validation_loss,
    worst_origin_recall,
)


def test_grid_options_parse_like_set_and_expand_to_every_combination() -> None:
    grid = parse_grid(["train.learning_rate=1e-3,3e-4", "train.dense_units=32,64",
                       "train.conv_filters=[8,8],[16,32]"])
    assert grid == {"train.learning_rate": [0.001, 0.0003], "train.dense_units": [32, 64],
                    "train.conv_filters": [[8, 8], [16, 32]]}
    points = expand_grid(grid)
    assert len(points) == 8
    assert points[0] == {"train.learning_rate": 0.001, "train.dense_units": 32, "train.conv_filters": [8, 8]}
    assert points[-1] == {"train.learning_rate": 0.0003, "train.dense_units": 64, "train.conv_filters": [16, 32]}
    assert split_values(" a , [1,2] ,b") == ["a", "[1,2]", "b"]


@pytest.mark.parametrize("options", [["train.learning_rate"], ["train.learning_rate=1e-3", "train.learning_rate=2e-3"],
                                     ["train.learning_rate="]])
def test_bad_grid_options_are_config_errors(options: list[str]) -> None:
    with pytest.raises(ConfigError):
        parse_grid(options)


def test_an_empty_or_too_large_grid_is_refused() -> None:
    with pytest.raises(ConfigError, match="empty"):
        expand_grid({})
    with pytest.raises(ConfigError, match="no values"):
        expand_grid({"train.epochs": []})
    with pytest.raises(ConfigError, match=f"at most {MAX_POINTS}"):
        expand_grid({"train.epochs": list(range(MAX_POINTS + 1))})
    assert expand_grid({"train.epochs": 3}) == [{"train.epochs": 3}]  # a single value is one point


def test_shared_stage_is_the_last_data_stage_no_grid_key_changes() -> None:
    assert shared_stage(["train.learning_rate", "train.dense_units"]) == "augment"
    assert shared_stage(["augment.shift"]) == "preprocess"
    assert shared_stage(["preprocess.size"]) == "split"
    assert shared_stage(["data.max_images"]) == "download"
    assert DATA_STAGE_NAMES == STAGE_NAMES[:5]


def test_values_become_override_text_and_labels() -> None:
    assert override_text("1e-3") == "1e-3"
    assert override_text(0.001) == "0.001"
    assert override_text([8, 16]) == "[8, 16]"
    assert point_label({"train.learning_rate": 0.001, "train.conv_filters": [8, 8]}) == (
        "train.learning_rate=0.001, train.conv_filters=[8, 8]")


def test_a_plan_checks_every_point_and_gives_each_its_parameters() -> None:
    plan = plan_sweep({"train.learning_rate": [1e-3, 3e-4]}, "smoke", "/data", 120, 2,
                      {"train.dense_units": 16}, share_data_stages=True)
    assert plan.keys == ["train.learning_rate"] and len(plan.points) == 2
    assert plan.wait_for == "augment"
    assert plan.parameters(1, "parent-1") == {
        "profile": "smoke", "source": "/data", "max_images": 120, "epochs": 2, "parent_run_id": "parent-1",
        "overrides": {"train.dense_units": "16", "train.learning_rate": "0.0003"},
    }
    params = plan.run_params()
    assert json.loads(params["sweep.grid"]) == {"train.learning_rate": [0.001, 0.0003]}
    assert params["sweep.n_points"] == 2 and params["sweep.fixed.train.dense_units"] == "16"
    assert params["sweep.max_images"] == 120 and params["sweep.epochs"] == 2


def test_a_plan_without_sharing_or_options_starts_all_points_at_once() -> None:
    plan = plan_sweep(None, "smoke", None, None, None, None, share_data_stages=False)
    assert plan.grid == DEFAULT_GRID and plan.wait_for is None
    assert plan.common == {"profile": "smoke"}
    assert "sweep.epochs" not in plan.run_params()
    assert plan_sweep({"train.epochs": [1]}, "smoke", None, None, None, None, True).wait_for is None  # one point


def test_a_plan_refuses_an_invalid_point_or_a_setting_both_varied_and_fixed() -> None:
    with pytest.raises(ConfigError):
        plan_sweep({"train.nope": [1, 2]}, "smoke", None, None, None, None, True)
    with pytest.raises(ConfigError):
        plan_sweep({"train.epochs": [1, -1]}, "smoke", None, None, None, None, True)
    with pytest.raises(ConfigError, match="both varied by the grid and fixed"):
        plan_sweep({"train.epochs": [1, 2]}, "smoke", None, None, None, {"train.epochs": "3"}, True)


def row(index: int, state: str, run_id: str | None, accuracy: float | None, auc: float = 0.9,
        version: str | None = None, val_loss: float | None = None, **extra: float) -> dict:
    metrics = {} if accuracy is None else {"test_accuracy": accuracy, "test_roc_auc": auc}
    if val_loss is not None:
        metrics["best_val_loss"] = val_loss
    metrics.update(extra)
    stages = {name: ("Cached" if index else "Completed") for name in STAGE_NAMES}
    return point_row(index, {"train.learning_rate": 0.001 * (index + 1)}, f"sweep-x-{index + 1}", state, run_id,
                     metrics, {"model_version": version, "promotion": "promoted"} if version else {}, stages)


def test_a_row_holds_the_point_its_run_and_how_many_data_stages_came_from_the_cache() -> None:
    first, second = row(0, "Completed", "r1", 0.9, version="1"), row(1, "Completed", "r2", 0.8, version="2")
    assert first["point"] == 1 and first["train.learning_rate"] == "0.001"
    assert first["mlflow_run_id"] == "r1" and first["test_accuracy"] == 0.9 and first["test_f1"] is None
    assert first["model_version"] == "1" and first["promotion"] == "promoted"
    assert (first["data_stages_cached"], second["data_stages_cached"]) == (0, 5)
    assert first["val_loss"] is None and first["origin_recall_min"] is None


def test_the_validation_loss_is_the_best_epochs_else_the_last_and_origin_recall_is_the_worst_family() -> None:
    assert validation_loss({"best_val_loss": 0.2, "val_loss": 0.5}) == 0.2
    assert validation_loss({"val_loss": 0.5}) == 0.5
    assert validation_loss({"best_val_loss": float("nan"), "val_loss": 0.4}) == 0.4
    assert validation_loss({"test_accuracy": 0.99}) is None
    assert worst_origin_recall({"origin_recall_copies": 0.9, "origin_recall_augmented": 0.7, "val_loss": 0.1}) == 0.7
    assert worst_origin_recall({"test_recall_with_mask": 0.5}) is None


def test_the_summary_ranks_by_validation_loss_never_by_test_accuracy() -> None:
    rows = [row(0, "Completed", "r1", 0.99, val_loss=0.30, version="1"),  # best test accuracy, worse loss
            row(1, "Completed", "r2", 0.90, val_loss=0.10, auc=0.95, version="2"),
            row(2, "Failed", "r3", 0.999, val_loss=0.01),  # a failed point never wins
            row(3, "Completed", "r4", 1.0)]  # no validation loss: shown, not ranked
    summary = summarize(rows, "parent", ("2", "r2"), "http://mlflow")
    assert summary["best"]["point"] == 2
    assert [r["rank"] for r in summary["points"]] == [2, 1, None, None]
    assert summary["champion"] == {"version": "2", "run_id": "r2", "from_sweep": True}
    assert summary["n_failed"] == 1
    assert failed_points(summary) == "1 of 4 points did not complete: sweep-x-3 (Failed)"
    assert summary_metrics(summary) == {"n_points": 4, "n_completed": 3, "n_failed": 1, "best_val_loss": 0.1,
                                        "best_test_accuracy": 0.9, "best_test_roc_auc": 0.95}
    assert summary_tags(summary, ["train.learning_rate"]) == {
        "best_run_id": "r2", "best_point": "train.learning_rate=0.002", "best_model_version": "2",
        "champion_version": "2", "champion_run_id": "r2", "champion_from_sweep": "true"}
    assert summarize(rows[:1], "parent", ("7", "old"), "uri")["champion"]["from_sweep"] is False
    assert failed_points(summarize(rows[:2], "parent", None, "uri")) is None


def test_a_tie_on_validation_loss_goes_to_the_higher_worst_origin_recall() -> None:
    rows = [row(0, "Completed", "r1", 0.9, val_loss=0.2, origin_recall_a=0.99, origin_recall_b=0.80),
            row(1, "Completed", "r2", 0.8, val_loss=0.2, origin_recall_a=0.90, origin_recall_b=0.95)]
    summary = summarize(rows, "parent", None, "uri")
    assert summary["best"]["mlflow_run_id"] == "r2" and summary["best"]["origin_recall_min"] == 0.90
    assert summary_metrics(summary)["best_origin_recall_min"] == 0.90
    assert "| origin_recall_min |" in summary_markdown(summary, ["train.learning_rate"], "link")


def test_no_validation_loss_means_no_best_point() -> None:
    summary = summarize([row(0, "Completed", "r1", 0.99, version="1")], "parent", None, "uri")
    assert summary["best"] is None and "best_test_accuracy" not in summary_metrics(summary)
    text = summary_markdown(summary, ["train.learning_rate"], "link")
    assert "no completed point logged a validation loss; no champion." in text


def test_completed_points_that_did_not_nest_under_the_parent_are_an_error() -> None:
    with pytest.raises(SweepError, match="another MLflow"):
        summarize([row(0, "Completed", None, None)], "parent", None, "http://mlflow")
    nothing = summarize([row(0, "Crashed", None, None)], "parent", None, "http://mlflow")
    assert nothing["best"] is None and summary_tags(nothing, ["train.learning_rate"]) == {}


def test_the_markdown_has_one_table_row_per_point_and_links_the_parent_run() -> None:
    summary = summarize([row(0, "Completed", "r1", 0.9, version="1", val_loss=0.25),
                         row(1, "Completed", "r2", 0.8)], "parent", ("1", "r1"), "http://mlflow")
    text = summary_markdown(summary, ["train.learning_rate"], "http://mlflow/#/experiments/1/runs/parent")
    assert text.startswith("# maskcls sweep: 2 points")
    assert ("best point: **1** (train.learning_rate=0.001), val_loss 0.2500, test_accuracy 0.9000, version 1"
            in text)
    assert "`champion` is version **1**, from this sweep" in text
    assert "ranked by lowest validation loss" in text
    assert "[parent](http://mlflow/#/experiments/1/runs/parent)" in text
    assert "| point | train.learning_rate | state | rank | val_loss | test_accuracy |" in text
    assert "| 2 | 0.002 | Completed |  |  | 0.8000 |  | 0.9000 |  |  | 5 | sweep-x-2 |" in text
    assert "origin_recall_min" not in text  # no run scored a held-out origin
    local = summary_markdown(summarize([], "parent", None, "sqlite"), ["train.learning_rate"], "(local store)")
    assert "no completed point logged a validation loss; no champion." in local
    assert "Parent MLflow run: (local store)" in local


# --------------------------------------------------------------------------- the export


def mlflow_run(run_id: str, status: str, lr: str, metrics: dict[str, float], fingerprint: str = "fp1") -> dict:
    return {"run_id": run_id, "run_name": f"name-{run_id}", "status": status,
            "params": {"train.learning_rate": lr, "profile": "smoke", "dataset_fingerprint": fingerprint},
            "metrics": metrics, "tags": {"git_commit": "abc123", "code_version": "cv", "model_version": "4",
                                         "promotion": "not_better"}}


def test_the_export_lists_candidates_as_data_ranked_by_validation_loss() -> None:
    parent = {"run_id": "p", "run_name": "sweep-x", "status": "FINISHED", "tags": {"git_commit": "abc123"},
              "params": {"sweep.grid": json.dumps({"train.learning_rate": [0.001, 0.003, 0.01]}),
                         "sweep.profile": "smoke", "sweep.fixed.train.epochs": "2"}}
    children = [
        mlflow_run("a", "FINISHED", "0.001", {"best_val_loss": 0.4, "val_loss": 0.5, "test_accuracy": 0.99,
                                              "origin_recall_copies": 0.9}),
        mlflow_run("b", "FAILED", "0.01", {"best_val_loss": 0.01}),
        mlflow_run("c", "FINISHED", "0.003", {"val_loss": 0.2, "test_accuracy": 0.95}, fingerprint="fp2"),
    ]
    doc = export_document(parent, children, "http://mlflow", "2026-01-01T00:00:00+00:00")
    assert doc["format"] == EXPORT_FORMAT and doc["parent_run_id"] == "p" and doc["git_commit"] == "abc123"
    assert doc["grid"] == {"train.learning_rate": [0.001, 0.003, 0.01]} and doc["profile"] == "smoke"
    assert doc["fixed"] == {"train.epochs": "2"} and doc["ranking"] == RANKING_RULE
    assert doc["best_run_id"] == "c" and doc["dataset_fingerprints"] == ["fp1", "fp2"]
    assert [(c["run_id"], c["rank"]) for c in doc["candidates"]] == [("c", 1), ("a", 2), ("b", None)]
    first, second, _ = doc["candidates"]
    assert first["point"] == {"train.learning_rate": "0.003"} and first["val_loss"] == 0.2
    assert second["val_loss"] == 0.4 and second["origin_recall"] == {"copies": 0.9}
    assert second["origin_recall_min"] == 0.9 and second["test_accuracy"] == 0.99
    assert second["git_commit"] == "abc123" and second["dataset_fingerprint"] == "fp1"
    assert second["model_version"] == "4" and second["params"]["profile"] == "smoke"
    assert second["metrics"] == {"best_val_loss": 0.4, "origin_recall_copies": 0.9, "test_accuracy": 0.99,
                                 "val_loss": 0.5}
    json.dumps(doc)  # plain data
