"""MLflow UI: the `face-mask` experiment with the runs pressed in Prefect, a run page with
`test_accuracy` and the confusion matrix image, `face-mask-classifier` with `@ champion`, and
the run link of Prefect's training summary opening in the model-training view."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from .conftest import Shot, Stack
from .ui import dismiss_mlflow_assistant, dismiss_registry_promo, mlflow_model_training_view, shown_artifact_image

pytestmark = pytest.mark.e2e

EXPERIMENT = "face-mask"
MODEL = "face-mask-classifier"
# Where MLflow 3.17's UI keeps the view a person last chose (GenAI until they choose).
FORGET_VIEW = ("Object.keys(localStorage).filter(k => k.startsWith('mlflow.workflowType'))"
               ".forEach(k => localStorage.removeItem(k))")


def mlflow_api(stack: Stack, method: str, path: str, **kwargs: Any) -> Any:
    response = httpx.request(
        method, f"{stack.mlflow_url}/api/2.0/mlflow/{path}", timeout=30, trust_env=False, **kwargs
    )
    assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
    return response.json()


def mlflow_run_of(stack: Stack, flow_run: dict[str, Any]) -> dict[str, Any]:
    """The MLflow run that Prefect flow run `flow_run` logged to (tagged with its id)."""
    exp = mlflow_api(stack, "GET", "experiments/get-by-name", params={"experiment_name": EXPERIMENT})
    found = mlflow_api(stack, "POST", "runs/search", json={
        "experiment_ids": [exp["experiment"]["experiment_id"]],
        "filter": f"tags.prefect_flow_run_id = '{flow_run['id']}'",
    })
    runs = found.get("runs", [])
    assert len(runs) == 1, f"MLflow runs for flow run {flow_run['name']}: {len(runs)}"
    return runs[0]


def open_experiment(page: Any, stack: Stack) -> None:
    """Home -> "Model training" -> Experiments -> face-mask: its runs table."""
    mlflow_model_training_view(page, stack.mlflow_url)
    page.get_by_role("link", name="Experiments", exact=True).first.click()
    page.get_by_role("link", name=EXPERIMENT, exact=True).first.click()
    expect(page).to_have_url(re.compile(r"#/experiments/\d+"))
    dismiss_mlflow_assistant(page)


def test_experiment_lists_the_runs(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    open_experiment(page, e2e_stack)
    # The MLflow run is named after the Prefect flow run.
    for run in on_demand_runs:
        expect(page.get_by_role("link", name=run["name"], exact=True).first).to_be_visible()
    expect(page.get_by_text(re.compile(rf"{len(on_demand_runs)} matching runs"))).to_be_visible()
    # Columns -> Metrics -> test_accuracy puts each run's score in the table.
    page.get_by_role("button", name="Columns").click()
    page.get_by_role("dialog").get_by_text("test_accuracy", exact=True).click()
    page.keyboard.press("Escape")
    expect(page.get_by_role("columnheader", name="test_accuracy").first).to_be_visible()
    screenshot(page, "mlflow face-mask experiment", docs="mlflow-experiment.png")


def test_run_page_shows_test_accuracy_and_confusion_matrix(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    first = on_demand_runs[0]  # the run that trained (the second came from the cache)
    ml_run = mlflow_run_of(e2e_stack, first)
    metrics = {m["key"]: m["value"] for m in ml_run["data"]["metrics"]}
    assert "test_accuracy" in metrics, sorted(metrics)

    open_experiment(page, e2e_stack)
    page.get_by_role("link", name=first["name"], exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"/runs/{ml_run['info']['run_id']}"))
    dismiss_mlflow_assistant(page)
    row = page.get_by_role("row").filter(has=page.get_by_text("test_accuracy", exact=True))
    expect(row).to_have_count(1)
    shown = re.search(r"\d+\.\d+|\b[01]\b", row.inner_text().replace("test_accuracy", ""))
    assert shown, f"no value in the test_accuracy row: {row.inner_text()!r}"
    assert abs(float(shown.group()) - metrics["test_accuracy"]) < 1e-3, (shown.group(), metrics)
    row.scroll_into_view_if_needed()
    screenshot(page, "mlflow run overview with test_accuracy", docs="mlflow-run.png")

    page.get_by_role("tab", name="Artifacts").or_(page.get_by_role("link", name="Artifacts")).first.click()
    page.get_by_text("confusion_matrix.png", exact=True).first.click()
    box = shown_artifact_image(page, re.compile(r"Path: .*confusion_matrix\.png"))
    assert box["width"] > 200 and box["height"] > 200, box
    screenshot(page, "mlflow confusion matrix artifact", docs="mlflow-confusion-matrix.png")


def test_model_page_shows_champion_alias(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    champion = mlflow_api(
        e2e_stack, "GET", "registered-models/alias", params={"name": MODEL, "alias": "champion"}
    )["model_version"]["version"]

    mlflow_model_training_view(page, e2e_stack.mlflow_url)
    page.get_by_role("link", name="Model registry").first.click()
    dismiss_registry_promo(page)
    page.get_by_role("link", name=MODEL, exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"#/models/{MODEL}"))
    expect(page.get_by_role("heading", name=MODEL).or_(page.get_by_text(MODEL, exact=True)).first).to_be_visible()
    row = page.get_by_role("row").filter(has=page.get_by_role("link", name=f"Version {champion}", exact=True))
    expect(row).to_have_count(1)
    expect(row).to_contain_text("champion")
    expect(row).to_contain_text("promotion")
    # No other version carries the alias.
    expect(page.get_by_role("row").filter(has_text="champion")).to_have_count(1)
    screenshot(page, "mlflow registered model with champion", docs="mlflow-model.png")


def in_model_training_view(page: Any) -> None:
    """The sidebar of the model-training view: the model registry, no GenAI evaluation runs."""
    expect(page.get_by_role("link", name="Model registry")).to_be_visible()
    expect(page.get_by_text("Evaluation runs", exact=True)).to_have_count(0)


def test_the_training_summary_link_opens_the_run_in_the_model_training_view(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot
) -> None:
    exp = mlflow_api(e2e_stack, "GET", "experiments/get-by-name", params={"experiment_name": EXPERIMENT})
    tags = {t["key"]: t["value"] for t in exp["experiment"].get("tags", [])}
    assert tags.get("mlflow.experimentKind") == "custom_model_development", tags

    # The link a person follows: the MLflow run in the flow run's training summary in Prefect.
    first = on_demand_runs[0]
    (summary,) = e2e_stack.api("POST", "/artifacts/filter", json={"artifacts": {
        "key": {"any_": ["training-summary"]}, "flow_run_id": {"any_": [first["id"]]}}})
    link = re.search(r"\]\((http[^)]+)\)", summary["data"])
    assert link, summary["data"]
    run_id = mlflow_run_of(e2e_stack, first)["info"]["run_id"]
    assert link.group(1).startswith(f"{e2e_stack.mlflow_url}/#/experiments/"), link.group(1)
    assert f"/runs/{run_id}?" in link.group(1) and link.group(1).endswith("workflowType=machine_learning")

    # A browser that never chose a view: the bare run page opens in the GenAI view ...
    page.goto(e2e_stack.mlflow_url)
    page.evaluate(FORGET_VIEW)
    page.goto("about:blank")
    page.goto(link.group(1).split("?")[0])
    dismiss_mlflow_assistant(page)
    expect(page.get_by_text("Evaluation runs", exact=True)).to_be_visible()
    # ... and the project's link in the model-training view, on the run's page.
    page.goto("about:blank")
    page.goto(link.group(1))
    expect(page).to_have_url(re.compile(rf"/runs/{run_id}"))
    dismiss_mlflow_assistant(page)
    in_model_training_view(page)
    expect(page.get_by_role("row").filter(has=page.get_by_text("test_accuracy", exact=True))).to_have_count(1)
    screenshot(page, "mlflow run opened from the training summary link")
