"""Prefect UI: press Run on the `on-demand` deployment, watch the run complete, see its task
runs (the second run's stages Cached) and its `training-summary` markdown artifact."""

from __future__ import annotations

import ast
import re
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import expect

from flows.deploy import ON_DEMAND
from tests.support import REPO

from .conftest import Shot, Stack
from .ui import open_deployment, open_flow_run, task_run_states

pytestmark = pytest.mark.e2e


def _cached_stages() -> tuple[str, ...]:
    """flows/train.py's CACHED_STAGES, read from its source: importing the flow would import
    Prefect into this process before tests/integration/conftest.py sets Prefect's environment."""
    tree = ast.parse(Path(REPO / "flows" / "train.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(t, ast.Name) and t.id == "CACHED_STAGES" for t in node.targets
        ):
            return tuple(ast.literal_eval(node.value))
    raise AssertionError("flows/train.py has no CACHED_STAGES")


CACHED_STAGES = _cached_stages()


def stage_of(task_run_name: str) -> str:
    """`augment-c25` -> `augment` (Prefect appends a short id to task-run names)."""
    return task_run_name.rsplit("-", 1)[0]


def test_deployment_page_lists_the_runs_pressed_in_the_ui(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    open_deployment(page, e2e_stack.prefect_ui, ON_DEMAND)
    for run in on_demand_runs:
        expect(page.get_by_role("link", name=run["name"], exact=True).first).to_be_visible()
    expect(page.get_by_text("Completed").first).to_be_visible()
    screenshot(page, "prefect on-demand deployment with its runs", docs="prefect-deployment.png")


def test_first_run_completed_every_stage(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    first = on_demand_runs[0]
    open_flow_run(page, e2e_stack.prefect_ui, first["id"])
    expect(page.get_by_text(first["name"], exact=True).first).to_be_visible()
    expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
    screenshot(page, "prefect first run (graph and logs)")

    page.get_by_role("tab", name="Task Runs", exact=True).click()
    expected = len(e2e_stack.task_runs(first["id"]))
    states = task_run_states(page, expected)
    screenshot(page, "prefect first run task runs")
    by_stage = {stage_of(name): state for name, state in states.items()}
    assert set(CACHED_STAGES) <= set(by_stage), f"task runs shown: {sorted(states)}"
    # A fresh MASKCLS_HOME: nothing is cached yet, every stage computes.
    assert all(by_stage[s] == "Completed" for s in CACHED_STAGES), by_stage


def test_second_run_stages_show_cached(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    second = on_demand_runs[1]
    open_flow_run(page, e2e_stack.prefect_ui, second["id"], tab="Task Runs")
    expected = len(e2e_stack.task_runs(second["id"]))
    states = task_run_states(page, expected)
    by_stage = {stage_of(name): state for name, state in states.items()}
    assert set(CACHED_STAGES) <= set(by_stage), f"task runs shown: {sorted(states)}"
    assert all(by_stage[s] == "Cached" for s in CACHED_STAGES), by_stage
    # The summary line above the list counts them as a person reads it.
    expect(page.get_by_text(re.compile(rf"\b{len(CACHED_STAGES)} Cached\b")).first).to_be_visible()
    # What the UI shows agrees with the API.
    api_states = {stage_of(t["name"]): t["state_name"] for t in e2e_stack.task_runs(second["id"])}
    assert all(api_states[s] == "Cached" for s in CACHED_STAGES), api_states
    page.get_by_text(re.compile(r"\bCached\b")).first.scroll_into_view_if_needed()
    screenshot(page, "prefect second run task runs cached", docs="prefect-flow-run.png")


def open_summary_artifact(page: Any, e2e_stack: Stack, run: dict[str, Any]) -> None:
    """Flow run -> Artifacts tab -> `training-summary` card -> this run's version of it."""
    open_flow_run(page, e2e_stack.prefect_ui, run["id"], tab="Artifacts")
    card = page.get_by_text("training-summary", exact=True).first
    expect(card).to_be_visible()
    expect(page.get_by_text("MARKDOWN", exact=False).first).to_be_visible()
    card.click()
    # The artifact key page lists one version per flow run: open this run's.
    version = page.locator("div", has=page.get_by_role("link", name=run["name"], exact=True)).filter(
        has=page.get_by_role("link", name=re.compile(r"^[0-9a-f]{8}$"))
    ).last.get_by_role("link", name=re.compile(r"^[0-9a-f]{8}$"))
    version.click()
    expect(page).to_have_url(re.compile(r"/artifacts/artifact/[0-9a-f-]{36}"))


def test_training_summary_artifact_renders(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    first, second = on_demand_runs
    open_summary_artifact(page, e2e_stack, first)
    expect(page.get_by_role("heading", name="maskcls training run (smoke)")).to_be_visible()
    expect(page.get_by_text(re.compile(r"Registered face-mask-classifier version 1")).first).to_be_visible()
    expect(page.get_by_role("cell", name="test_accuracy", exact=True)).to_be_visible()
    expect(page.get_by_role("cell", name="train", exact=True)).to_be_visible()
    screenshot(page, "prefect training-summary artifact", docs="prefect-artifact.png")

    open_summary_artifact(page, e2e_stack, second)
    expect(page.get_by_text(re.compile(r"Every stage came from the cache")).first).to_be_visible()
    expect(page.get_by_role("cell", name="Cached", exact=True).first).to_be_visible()
    screenshot(page, "prefect training-summary artifact of the cached run")
