"""The `scheduled-retrain` schedule really fires, and pausing it really stops it.

In the Prefect UI: edit the deployment's cron to once a minute, wait (API) until a run
the scheduler created completes and see it on the deployment page, then pause the
schedule with its toggle and check for 75 s that no run starts any more.

What Prefect 3.8.8 does on pause (read from its server code and checked here): the
UI's toggle PATCHes the schedule to inactive; the server deletes that deployment's
auto-scheduled runs that are still Scheduled and due in the future, and the scheduler
(loop 5 s here) creates none for an inactive schedule. A run a worker had already
picked up, or one already due at that instant, is not touched: those are excluded
from the check below, which is that no *other* run ever leaves the Scheduled state.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from typing import Any

import httpx
import pytest
from playwright.sync_api import expect

from maskcls.names import SCHEDULED
from tests.support.waiting import wait_until

from .conftest import RUN_TIMEOUT_S, Shot, Stack
from .ui import open_deployment, open_flow_run

pytestmark = pytest.mark.e2e

EVERY_MINUTE = "* * * * *"
QUIET_AFTER_PAUSE_S = 75.0


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def schedule_switch(page: Any) -> Any:
    """The deployment's one schedule toggle (its accessible name is "toggle <schedule>")."""
    return page.get_by_role("switch", name=re.compile(r"^toggle "))


# The on-demand runs come first whatever the test order: the other tests read them as the
# stack's first runs (every stage computed, version 1), and a scheduled run on the same data
# before them would have filled the cache.
@pytest.mark.usefixtures("on_demand_runs")
def test_every_minute_schedule_fires_then_pause_stops_it(
    e2e_stack: Stack, browser: Any, screenshot: Shot
) -> None:
    deployment = e2e_stack.deployment(SCHEDULED)
    deployment_id = deployment["id"]
    page = browser.new_page()
    try:
        # ---- the deployment as registered: a weekly cron, active
        open_deployment(page, e2e_stack.prefect_ui, SCHEDULED)
        switch = schedule_switch(page)
        expect(switch).to_be_checked()
        expect(page.get_by_text("Schedules", exact=True)).to_be_visible()
        screenshot(page, "scheduled-retrain as registered (weekly)")

        # ---- edit the cron in the UI: schedule menu -> Edit -> Value -> Save
        card = page.locator("div", has=switch).filter(has=page.get_by_role("button")).last
        card.get_by_role("button").last.click()
        page.get_by_role("menuitem", name="Edit").click()
        dialog = page.get_by_role("dialog")
        expect(dialog.get_by_text("Edit Schedule")).to_be_visible()
        value = dialog.get_by_label("Value")
        value.fill(EVERY_MINUTE)
        expect(dialog.get_by_text("Every minute", exact=True)).to_be_visible()
        screenshot(page, "edit schedule to every minute")
        dialog.get_by_role("button", name="Save").click()
        expect(page.get_by_text("Deployment schedule updated")).to_be_visible()
        expect(page.get_by_text("Every minute", exact=True).first).to_be_visible()
        edited_at = dt.datetime.now(dt.timezone.utc)

        schedules = e2e_stack.deployment(SCHEDULED)["schedules"]
        assert [s["schedule"].get("cron") for s in schedules] == [EVERY_MINUTE], schedules
        assert schedules[0]["active"] is True

        # ---- the scheduler (5 s loop) fills the next hour with runs; all are smoke runs
        upcoming = wait_until(
            lambda: [r for r in e2e_stack.flow_runs(deployment_id) if r["auto_scheduled"]
                     and r["state_type"] == "SCHEDULED"],
            30, "the scheduler to create runs for the new cron", interval=1,
        )
        for run in upcoming:
            assert run["parameters"].get("profile") == "smoke", run["parameters"]
            # Prefect's schedule editor saves every parameter as an override, None included;
            # a None source means the worker's MASKCLS_DATA_SOURCE, the same subset here
            # (the deployments' default is that source as a list of parts).
            assert run["parameters"].get("source") in (None, e2e_stack.data_source, [e2e_stack.data_source]), \
                run["parameters"]

        # ---- one scheduled run fires and completes (next minute boundary + the run)
        def completed_scheduled() -> list[dict[str, Any]]:
            return [
                r for r in e2e_stack.flow_runs(deployment_id)
                if r["auto_scheduled"] and r["state_type"] == "COMPLETED"
                and parse_time(r["expected_start_time"]) >= edited_at - dt.timedelta(seconds=1)
            ]

        fired = wait_until(completed_scheduled, 60 + RUN_TIMEOUT_S, "a scheduled run to complete", interval=2)[0]
        # Fired by the clock: it started at its cron time (workers may start a run a moment early).
        lag = parse_time(fired["start_time"]) - parse_time(fired["expected_start_time"])
        assert dt.timedelta(seconds=-10) <= lag <= dt.timedelta(seconds=90), lag
        print(f"[e2e] scheduled run {fired['name']} expected {fired['expected_start_time']} "
              f"started {fired['start_time']} ended {fired['end_time']}")
        # It trained (or came from the cache) on the subset, not on the pinned download.
        assert mlflow_source_of(e2e_stack, fired["id"]) == e2e_stack.data_source

        # ---- see it in the UI: the run page, and the deployment's runs list
        open_flow_run(page, e2e_stack.prefect_ui, fired["id"])
        expect(page.get_by_text(fired["name"], exact=True).first).to_be_visible()
        expect(page.get_by_text("Completed", exact=True).first).to_be_visible()
        expect(page.get_by_text("auto-scheduled", exact=True).first).to_be_visible()
        screenshot(page, "scheduled run completed")

        open_deployment(page, e2e_stack.prefect_ui, SCHEDULED)
        expect(page.get_by_role("link", name=fired["name"], exact=True).first).to_be_visible()
        expect(page.get_by_text("Every minute", exact=True).first).to_be_visible()
        screenshot(page, "scheduled-retrain every minute with a completed scheduled run",
                   docs="prefect-schedule.png")

        # ---- pause with the schedule's toggle
        switch = schedule_switch(page)
        expect(switch).to_be_checked()
        switch.click()
        expect(page.get_by_text("Deployment schedule paused")).to_be_visible()
        expect(switch).not_to_be_checked()
        paused_at = dt.datetime.now(dt.timezone.utc)
        wait_until(lambda: not e2e_stack.deployment(SCHEDULED)["schedules"][0]["active"], 10,
                   "the schedule to be inactive on the server", interval=0.5)

        # Runs that had already left Scheduled, or were already due, are not the pause's business.
        at_pause = e2e_stack.flow_runs(deployment_id)
        exempt = {
            r["id"] for r in at_pause
            if r["state_type"] != "SCHEDULED"
            or parse_time(r["expected_start_time"]) <= paused_at + dt.timedelta(seconds=2)
        }
        future = [r["name"] for r in at_pause if r["id"] not in exempt]
        assert not future, f"auto-scheduled future runs left after pausing: {future}"

        # ---- the paused state, as a person sees it after reloading the page
        page.reload()
        switch = schedule_switch(page)
        expect(switch).not_to_be_checked()
        expect(page.get_by_text("Next Run", exact=True)).to_have_count(0)
        screenshot(page, "scheduled-retrain paused", docs="prefect-schedule-paused.png")

        # ---- nothing starts for 75 s (more than one cron period plus a scheduler loop)
        started_after_pause: list[str] = []
        created_after_pause: list[str] = []
        deadline = time.monotonic() + QUIET_AFTER_PAUSE_S
        while time.monotonic() < deadline:
            for run in e2e_stack.flow_runs(deployment_id):
                if run["id"] in exempt:
                    continue
                if parse_time(run["created"]) > paused_at:
                    created_after_pause.append(f"{run['name']} ({run['state_name']})")
                if run["state_type"] != "SCHEDULED":
                    started_after_pause.append(f"{run['name']} ({run['state_name']})")
            assert not started_after_pause, f"runs started after the pause: {started_after_pause}"
            assert not created_after_pause, f"runs scheduled after the pause: {created_after_pause}"
            time.sleep(3)
        late_exempt = [r for r in e2e_stack.flow_runs(deployment_id)
                       if r["id"] in exempt and r["id"] != fired["id"]]
        print(f"[e2e] runs already under way or due at the pause: "
              f"{[(r['name'], r['state_name']) for r in late_exempt]}")

        page.reload()
        expect(schedule_switch(page)).not_to_be_checked()
        expect(page.get_by_role("link", name=fired["name"], exact=True).first).to_be_visible()
        screenshot(page, "scheduled-retrain still paused 75 s later")
    finally:
        page.close()


def mlflow_source_of(stack: Stack, flow_run_id: str) -> str | None:
    """The `source` tag of the MLflow run that flow run `flow_run_id` logged to."""
    exp = httpx.get(
        f"{stack.mlflow_url}/api/2.0/mlflow/experiments/get-by-name",
        params={"experiment_name": "face-mask"}, timeout=30, trust_env=False,
    ).json()["experiment"]["experiment_id"]
    found = httpx.post(
        f"{stack.mlflow_url}/api/2.0/mlflow/runs/search",
        json={"experiment_ids": [exp], "filter": f"tags.prefect_flow_run_id = '{flow_run_id}'"},
        timeout=30, trust_env=False,
    ).json()
    runs = found.get("runs", [])
    assert len(runs) == 1, found
    return {t["key"]: t["value"] for t in runs[0]["data"].get("tags", [])}.get("source")
