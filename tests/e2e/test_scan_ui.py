"""Prefect UI -> MLflow UI for whole photos: press Run on `scan-photos/on-demand` with a folder
of street photos, watch the run complete, then find its annotated photo in the run's artifacts
in the `face-mask-scans` experiment (the scanner champion follows the smoke champion that the
`on_demand_runs` fixture trained)."""

from __future__ import annotations

import re
import shutil
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from maskcls.names import SCAN_EXPERIMENT, SCAN_FLOW_NAME, SCAN_ON_DEMAND
from tests.support.data import SHARED
from tests.support.waiting import wait_until

from .conftest import Shot, Stack
from .ui import dismiss_mlflow_assistant, mlflow_model_training_view, open_deployment_page, shown_artifact_image, submit_run

pytestmark = pytest.mark.e2e

SCENES = SHARED.parent / "face-mask-scenes" / "images"
PHOTOS = ("maksssksksss0.jpg", "maksssksksss5.jpg")  # two `report` photos with several faces each


def scan_runs_of(stack: Stack, flow_run: dict[str, Any]) -> list[dict[str, Any]]:
    """The MLflow runs in face-mask-scans that Prefect flow run ``flow_run`` logged to."""
    base = f"{stack.mlflow_url}/api/2.0/mlflow"
    exp = httpx.get(f"{base}/experiments/get-by-name", params={"experiment_name": SCAN_EXPERIMENT},
                    timeout=30, trust_env=False).json()["experiment"]
    found = httpx.post(f"{base}/runs/search", timeout=30, trust_env=False, json={
        "experiment_ids": [exp["experiment_id"]], "filter": f"tags.prefect_flow_run_id = '{flow_run['id']}'"}).json()
    return found.get("runs", [])


def test_scan_photos_pressed_in_prefect_logs_annotated_photos_to_mlflow(
    e2e_stack: Stack, on_demand_runs: list[dict[str, Any]], page: Any, screenshot: Shot, e2e_dir: Path
) -> None:
    folder = e2e_dir / "photos"
    folder.mkdir(exist_ok=True)
    for name in PHOTOS:
        shutil.copy(SCENES / name, folder / name)
    deployment = e2e_stack.api("GET", f"/deployments/name/{SCAN_FLOW_NAME}/{SCAN_ON_DEMAND}")
    known = {r["id"] for r in e2e_stack.flow_runs(deployment["id"])}

    # Prefect: the deployment page -> Run -> Custom run -> folder -> Submit.
    open_deployment_page(page, e2e_stack.prefect_ui, deployment["id"], SCAN_FLOW_NAME)
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    expect(page.get_by_text(re.compile(r"Folder of photos \(walked recursively\)"))).to_be_visible()
    # `folder` is `str | None`: the form shows it as None until "str" is chosen, then a text box.
    label = page.get_by_text("folder (Optional)", exact=True)
    block = page.locator("div", has=label).filter(has=page.get_by_text("str", exact=True)).last
    block.get_by_text("str", exact=True).click()
    box = block.locator("input, textarea").first
    box.fill(str(folder))
    expect(box).to_have_value(str(folder))
    screenshot(page, "scan-photos on-demand run form", full_page=True)
    submit_run(page, created=lambda: any(r["id"] not in known for r in e2e_stack.flow_runs(deployment["id"])))
    new = wait_until(lambda: [r for r in e2e_stack.flow_runs(deployment["id"]) if r["id"] not in known],
                     30, "the scan run created by Submit", interval=1)
    assert len(new) == 1 and new[0]["parameters"].get("folder") == str(folder), new
    final = e2e_stack.wait_run_final(new[0]["id"])
    assert final["state_type"] == "COMPLETED", (
        f"scan run {final['name']} ended {final['state_name']}: {(final.get('state') or {}).get('message')}\n"
        + e2e_stack.worker_logs())

    (ml_run,) = scan_runs_of(e2e_stack, final)
    metrics = {m["key"]: m["value"] for m in ml_run["data"]["metrics"]}
    assert metrics["faces"] >= len(PHOTOS), metrics  # both photos hold several faces

    # MLflow: Experiments -> face-mask-scans -> the run (named after the flow run) -> Artifacts -> images/.
    mlflow_model_training_view(page, e2e_stack.mlflow_url)
    page.get_by_role("link", name="Experiments", exact=True).first.click()
    page.get_by_role("link", name=SCAN_EXPERIMENT, exact=True).first.click()
    dismiss_mlflow_assistant(page)
    page.get_by_role("link", name=final["name"], exact=True).first.click()
    expect(page).to_have_url(re.compile(rf"/runs/{ml_run['info']['run_id']}"))
    dismiss_mlflow_assistant(page)
    page.get_by_role("tab", name="Artifacts").or_(page.get_by_role("link", name="Artifacts")).first.click()
    expect(page.get_by_text("scan.csv", exact=True).first).to_be_visible()
    page.get_by_text("images", exact=True).first.click()
    annotated = page.get_by_text(re.compile(r"^maksssksksss0\.\w+$")).first
    expect(annotated).to_be_visible()
    annotated.click()
    box = shown_artifact_image(page, re.compile(r"Path: .*/images/maksssksksss0\.\w+"))
    assert box["width"] > 200 and box["height"] > 100, box
    screenshot(page, "mlflow annotated scan photo", docs="mlflow-scan-photo.png")
