"""A sweep as data: the grid of settings, its points, what they share, and the summary of their runs.

Pure: no Prefect, no MLflow. ``flows/sweep.py`` wires it to the training flow's
`sweep-member` deployment through the tasks of ``tasks/sweep.py``.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from maskcls.config import ConfigError, load_config, parse_overrides
from maskcls.errors import OrchestrationError
from maskcls.stages import STAGES

DEFAULT_GRID: dict[str, list[Any]] = {"train.learning_rate": [1e-3, 3e-4]}
MAX_POINTS = 64
#: The training flow's stages that read only data, in order: what points with the same data share.
DATA_STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES if s.data)
#: A point's columns from its run's metrics. `val_loss` ranks the points; the test side's figures
#: are shown and never used to pick (choosing by them would make the test side a validation side).
METRIC_COLUMNS = ("val_loss", "test_accuracy", "test_f1", "test_roc_auc")
#: The run metric holding the lowest validation loss over its epochs (tasks/log_run.py logs it);
#: runs without it fall back to `val_loss`, the last epoch's.
BEST_VAL_LOSS = "best_val_loss"
#: Per-family recall on a held-out origin family, when a run scores one (`origin_recall_<family>`).
ORIGIN_RECALL_PREFIX = "origin_recall_"
#: How a sweep picks its best point, as a person reads it (the summary, the export).
RANKING_RULE = ("lowest validation loss (best epoch's val_loss); a tie goes to the higher worst held-out-origin "
                "recall; test metrics are reported, never used to pick")


class SweepError(OrchestrationError):
    """The sweep cannot run here (no server, no workers, no deployment) or its points failed; says why."""


# --------------------------------------------------------------------------- the grid


def split_values(text: str) -> list[str]:
    """`1e-3,3e-4` -> ["1e-3", "3e-4"]; commas inside brackets stay: `[8,8],[16,32]` -> two values."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[(":
            depth += 1
        elif char in "])":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [v.strip() for v in values if v.strip()]


def parse_grid(options: Sequence[str]) -> dict[str, list[Any]]:
    """CLI `--grid section.field=v1,v2` options -> {"section.field": [v1, v2]} (values parsed like --set)."""
    grid: dict[str, list[Any]] = {}
    for option in options:
        if "=" not in option:
            raise ConfigError(f"--grid {option!r} is not of the form section.field=value1,value2")
        key, raw = (part.strip() for part in option.split("=", 1))
        if key in grid:
            raise ConfigError(f"--grid {key} is given twice; list all its values in one option")
        values = [parse_overrides([f"{key}={value}"])[key] for value in split_values(raw)]
        if not values:
            raise ConfigError(f"--grid {key} has no values")
        grid[key] = values
    return grid


def expand_grid(grid: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every combination of the grid's values, in the order given (first key varies slowest)."""
    if not grid:
        raise ConfigError("the grid is empty: give at least one setting with its values")
    axes = {key: list(values) if isinstance(values, (list, tuple)) else [values] for key, values in grid.items()}
    for key, values in axes.items():
        if not values:
            raise ConfigError(f"grid setting {key} has no values")
    points = [dict(zip(axes, combo)) for combo in itertools.product(*axes.values())]
    if len(points) > MAX_POINTS:
        raise ConfigError(f"the grid has {len(points)} points; at most {MAX_POINTS} per sweep")
    return points


def override_text(value: Any) -> str:
    """A value as the training flow's `overrides` take it (strings, parsed like --set)."""
    return value if isinstance(value, str) else json.dumps(value)


def shared_stage(grid_keys: Sequence[str]) -> str | None:
    """The last data stage whose result is the same for every point (None: not even the download).

    A stage's result changes with its own config sections and with those of every stage
    before it (through its inputs), so the walk stops at the first stage a grid key reaches.
    """
    varied = {key.split(".", 1)[0] for key in grid_keys}
    last = None
    for stage in STAGES:
        if not stage.data or varied & set(stage.sections):
            break
        last = stage.name
    return last


def point_label(point: Mapping[str, Any]) -> str:
    """`train.learning_rate=0.001, train.dense_units=32`: a point as a person reads it."""
    return ", ".join(f"{key}={override_text(value)}" for key, value in point.items())


@dataclass(frozen=True)
class SweepPlan:
    """A validated sweep: its grid, its points, and what every point's training run gets."""

    grid: dict[str, list[Any]]
    points: list[dict[str, Any]]
    #: Settings fixed for every point, as the training flow's `overrides` take them.
    fixed: dict[str, str]
    #: The training flow's parameters shared by every point (profile, source, max_images, epochs).
    common: dict[str, Any]
    #: The data stage that point 1 finishes before the others start (None: start all at once).
    wait_for: str | None

    @property
    def keys(self) -> list[str]:
        """The varied settings, in grid order."""
        return list(self.grid)

    def parameters(self, index: int, parent_run_id: str) -> dict[str, Any]:
        """The training flow's parameters of point ``index``, nested under MLflow run ``parent_run_id``."""
        varied = {key: override_text(value) for key, value in self.points[index].items()}
        return {**self.common, "parent_run_id": parent_run_id, "overrides": {**self.fixed, **varied}}

    def run_params(self) -> dict[str, Any]:
        """The sweep's own MLflow params (of its parent run)."""
        return {
            "sweep.grid": json.dumps(self.grid, sort_keys=True), "sweep.n_points": len(self.points),
            "sweep.profile": self.common["profile"], **{f"sweep.fixed.{k}": v for k, v in self.fixed.items()},
            **{f"sweep.{k}": self.common[k] for k in ("max_images", "epochs") if k in self.common},
        }


def plan_sweep(grid: Mapping[str, list[Any]] | None, profile: str, source: str | None, max_images: int | None,
               epochs: int | None, overrides: Mapping[str, Any] | None, share_data_stages: bool) -> SweepPlan:
    """Check every point is a valid config before anything starts; raises ``ConfigError`` naming the problem."""
    grid = dict(grid) if grid else dict(DEFAULT_GRID)
    fixed = {key: override_text(value) for key, value in (overrides or {}).items()}
    points = expand_grid(grid)
    overlap = set(grid) & set(fixed)
    if overlap:
        raise ConfigError(f"{', '.join(sorted(overlap))} is both varied by the grid and fixed by overrides")
    base: dict[str, Any] = {k: v for k, v in (("data.max_images", max_images), ("train.epochs", epochs))
                            if v is not None}
    fixed_values = parse_overrides([f"{k}={v}" for k, v in fixed.items()])
    for point in points:
        load_config(profile, {**base, **fixed_values, **point})
    common: dict[str, Any] = {"profile": profile}
    for key, value in (("source", source), ("max_images", max_images), ("epochs", epochs)):
        if value is not None:
            common[key] = value
    wait_for = shared_stage(list(grid)) if share_data_stages and len(points) > 1 else None
    return SweepPlan(grid=grid, points=points, fixed=fixed, common=common, wait_for=wait_for)


# --------------------------------------------------------------------------- the summary


def validation_loss(metrics: Mapping[str, float]) -> float | None:
    """A run's validation loss: its best epoch's (`best_val_loss`), else the last epoch's (`val_loss`)."""
    for key in (BEST_VAL_LOSS, "val_loss"):
        value = metrics.get(key)
        if value is not None and value == value:  # NaN: not a loss
            return float(value)
    return None


def worst_origin_recall(metrics: Mapping[str, float]) -> float | None:
    """The lowest `origin_recall_<family>` of a run (None: it scored no held-out origin)."""
    values = [float(v) for k, v in metrics.items() if k.startswith(ORIGIN_RECALL_PREFIX) and v == v]
    return min(values) if values else None


def rank_key(val_loss: float | None, origin_recall_min: float | None) -> tuple[float, float] | None:
    """Sort key of a candidate (smaller ranks first); None: it has no validation loss, so no rank."""
    if val_loss is None:
        return None
    return val_loss, -(origin_recall_min if origin_recall_min is not None else 0.0)


def rank(items: Sequence[dict[str, Any]], val_loss: str = "val_loss",
         origin_recall_min: str = "origin_recall_min") -> list[dict[str, Any]]:
    """The items that have a validation loss, best first, each given its ``rank`` (1 = best);
    the others get ``rank`` None. ``items`` keep their order; the ranked list is returned."""
    keyed = [(rank_key(item.get(val_loss), item.get(origin_recall_min)), k, item) for k, item in enumerate(items)]
    ranked = sorted((entry for entry in keyed if entry[0] is not None), key=lambda e: (e[0], e[1]))
    for _, _, item in keyed:
        item["rank"] = None
    for position, (_, _, item) in enumerate(ranked, start=1):
        item["rank"] = position
    return [item for _, _, item in ranked]


def point_row(index: int, point: Mapping[str, Any], flow_run: str, state: str, run_id: str | None,
              metrics: Mapping[str, float], tags: Mapping[str, str], stages: Mapping[str, str]) -> dict[str, Any]:
    """One row of the summary: a point's settings, flow run, state, nested MLflow run, metrics, registration."""
    return {
        "point": index + 1,
        **{key: override_text(value) for key, value in point.items()},
        "flow_run": flow_run,
        "state": state,
        "mlflow_run_id": run_id,
        **{m: metrics.get(m) for m in METRIC_COLUMNS},
        "val_loss": validation_loss(metrics),
        "origin_recall_min": worst_origin_recall(metrics),
        "model_version": tags.get("model_version"),
        "promotion": tags.get("promotion"),
        "data_stages_cached": sum(stages.get(s) == "Cached" for s in DATA_STAGE_NAMES),
        "stages": dict(stages),
    }


def summarize(rows: list[dict[str, Any]], parent_run_id: str, champion: tuple[str, str] | None,
              tracking_uri: str) -> dict[str, Any]:
    """The sweep's result: its rows, the best completed point, the champion (version, run id) after it.

    Raises ``SweepError`` when points completed but none logged under the parent run: the
    workers track into another MLflow than this sweep.
    """
    child_runs = {row["mlflow_run_id"] for row in rows if row["mlflow_run_id"]}
    completed = [row for row in rows if row["state"] == "Completed"]
    if completed and not child_runs:
        raise SweepError(
            f"the points completed but none of their MLflow runs is nested under {parent_run_id} in "
            f"{tracking_uri}: the workers log to another MLflow (set MLFLOW_TRACKING_URI to theirs)"
        )
    # Ranked by validation loss alone (then held-out-origin recall): never by a test figure.
    for row in rows:
        row["rank"] = None
    ranked = rank(completed)
    best = ranked[0] if ranked else None
    return {
        "mlflow_run_id": parent_run_id,
        "points": rows,
        "best": best,
        "champion": None if champion is None else {
            "version": champion[0], "run_id": champion[1], "from_sweep": champion[1] in child_runs,
        },
        "n_failed": len(rows) - len(completed),
    }


def failed_points(summary: Mapping[str, Any]) -> str | None:
    """Why the sweep failed (which points did not complete), or None when every point completed."""
    rows = summary["points"]
    failed = [f"{row['flow_run']} ({row['state']})" for row in rows if row["state"] != "Completed"]
    return f"{len(failed)} of {len(rows)} points did not complete: {', '.join(failed)}" if failed else None


def summary_metrics(summary: Mapping[str, Any]) -> dict[str, float]:
    """The parent run's metrics: point counts and the best point's scores."""
    rows, best = summary["points"], summary["best"]
    metrics: dict[str, float] = {
        "n_points": len(rows), "n_completed": len(rows) - summary["n_failed"], "n_failed": summary["n_failed"],
    }
    if best is not None:
        metrics.update({f"best_{m}": best[m] for m in (*METRIC_COLUMNS, "origin_recall_min")
                        if best.get(m) is not None})
    return metrics


def summary_tags(summary: Mapping[str, Any], keys: Sequence[str]) -> dict[str, str]:
    """The parent run's tags: which point and version are best, which version is champion."""
    tags: dict[str, str] = {}
    best, champion = summary["best"], summary["champion"]
    if best is not None:
        tags["best_run_id"] = best["mlflow_run_id"]
        tags["best_point"] = ", ".join(f"{k}={best[k]}" for k in keys)
        if best.get("model_version"):
            tags["best_model_version"] = best["model_version"]
    if champion is not None:
        tags.update({"champion_version": champion["version"], "champion_run_id": champion["run_id"],
                     "champion_from_sweep": str(champion["from_sweep"]).lower()})
    return tags


def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else ("" if value is None else str(value))


def summary_markdown(summary: Mapping[str, Any], keys: Sequence[str], link: str) -> str:
    """The sweep's summary for Prefect's markdown artifact: best point, champion, one table row per point."""
    rows = summary["points"]
    columns = ["point", *keys, "state", "rank", *METRIC_COLUMNS,
               *(["origin_recall_min"] if any(row.get("origin_recall_min") is not None for row in rows) else []),
               "model_version", "promotion", "data_stages_cached",
               "flow_run"]
    table = "\n".join(
        ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        + ["| " + " | ".join(_fmt(row.get(c)) for c in columns) + " |" for row in rows]
    )
    best, champion = summary["best"], summary["champion"]
    best_line = ("no completed point logged a validation loss" if best is None else
                 f"best point: **{best['point']}** ({', '.join(f'{k}={best[k]}' for k in keys)}), "
                 f"val_loss {_fmt(best['val_loss'])}, test_accuracy {_fmt(best['test_accuracy'])}, "
                 f"version {best['model_version'] or '-'}")
    if champion is None:
        champion_line = "no champion"
    else:
        where = "from this sweep" if champion["from_sweep"] else "from an earlier run (no point beat it)"
        champion_line = f"`champion` is version **{champion['version']}**, {where}"
    link_md = f"[{summary['mlflow_run_id']}]({link})" if link.startswith("http") else link
    return f"""# maskcls sweep: {len(rows)} points

{best_line}; {champion_line}.
Points are ranked by {RANKING_RULE}.
Each point registered its model and moved `champion` only if it beat the one standing
(test accuracy on test images unseen by both, by at least `promotion_min_delta`).

Parent MLflow run: {link_md}

{table}
"""


# --------------------------------------------------------------------------- the export

#: The export's format tag: what a reader of docs/experiments/*.json may rely on.
EXPORT_FORMAT = "maskcls-sweep-export/1"


def export_candidate(run: Mapping[str, Any], keys: Sequence[str]) -> dict[str, Any]:
    """One nested run as data: its point, ranking figures, provenance, and every param and metric.

    ``run``: ``run_id``, ``run_name``, ``status`` (MLflow's), ``params``, ``metrics``, ``tags``.
    """
    params, metrics, tags = run["params"], run["metrics"], run["tags"]
    return {
        "rank": None,
        "run_id": run["run_id"],
        "run_name": run.get("run_name"),
        "status": run["status"],
        "point": {key: params.get(key) for key in keys},
        "val_loss": validation_loss(metrics),
        "origin_recall_min": worst_origin_recall(metrics),
        "origin_recall": {k.removeprefix(ORIGIN_RECALL_PREFIX): float(v) for k, v in sorted(metrics.items())
                          if k.startswith(ORIGIN_RECALL_PREFIX)},
        **{m: metrics.get(m) for m in METRIC_COLUMNS if m != "val_loss"},
        "model_version": tags.get("model_version"),
        "promotion": tags.get("promotion"),
        "git_commit": tags.get("git_commit"),
        "code_version": tags.get("code_version"),
        "dataset_fingerprint": tags.get("dataset_fingerprint") or params.get("dataset_fingerprint"),
        "params": dict(sorted(params.items())),
        "metrics": {k: float(v) for k, v in sorted(metrics.items())},
    }


def export_document(parent: Mapping[str, Any], children: Sequence[Mapping[str, Any]], tracking_uri: str,
                    exported_at: str) -> dict[str, Any]:
    """A sweep's candidates as data (for docs/experiments/NAME.json), ranked by ``RANKING_RULE``.

    ``parent`` and each of ``children`` are runs as ``export_candidate`` takes them. Only
    FINISHED runs are ranked; the others are listed after them with ``rank`` None.
    """
    grid = json.loads(parent["params"].get("sweep.grid", "{}"))
    keys = list(grid)
    candidates = [export_candidate(child, keys) for child in children]
    ranked = rank([c for c in candidates if c["status"] == "FINISHED"])
    rest = sorted((c for c in candidates if c["rank"] is None), key=lambda c: (c["run_name"] or "", c["run_id"]))
    fixed = {k.removeprefix("sweep.fixed."): v for k, v in sorted(parent["params"].items())
             if k.startswith("sweep.fixed.")}
    return {
        "format": EXPORT_FORMAT,
        "parent_run_id": parent["run_id"],
        "parent_run_name": parent.get("run_name"),
        "parent_status": parent["status"],
        "tracking_uri": tracking_uri,
        "exported_at": exported_at,
        "profile": parent["params"].get("sweep.profile"),
        "grid": grid,
        "fixed": fixed,
        "git_commit": parent["tags"].get("git_commit"),
        "ranking": RANKING_RULE,
        "best_run_id": ranked[0]["run_id"] if ranked else None,
        "dataset_fingerprints": sorted({c["dataset_fingerprint"] for c in candidates if c["dataset_fingerprint"]}),
        "candidates": [*ranked, *rest],
    }
