"""What a person does in the two UIs, as small Playwright steps shared by the e2e tests.

Prefect 3.8.8 serves its React UI ("v2") under /v2 by default; MLflow 3.17's UI is a
hash-routed single page app. Locators use visible text and ARIA roles, not CSS classes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

from playwright.sync_api import Locator, Page, expect

# States a Prefect UI card shows for a run (the first ancestor of a task-run link that
# shows one of these is that task run's own card).
RUN_STATES = (
    "Cached", "Completed", "Failed", "Crashed", "Cancelled", "Running", "Pending", "Scheduled", "Late",
)


# --------------------------------------------------------------------------- Prefect


def open_deployment(page: Page, prefect_ui: str, name: str) -> None:
    """Deployments list -> click the deployment: its page with the Run button."""
    page.goto(f"{prefect_ui}/deployments")
    page.get_by_role("link", name=name, exact=True).first.click()
    expect(page.get_by_role("heading", name=name).or_(page.get_by_text(name, exact=True)).first).to_be_visible()
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()
    expect(page).to_have_url(re.compile(r"/deployments/deployment/[0-9a-f-]{36}"))
    # Fully drawn: the flow link in the header and the Triggers panel replace their placeholders.
    expect(page.get_by_role("link", name="train-face-mask").first).to_be_visible()
    expect(page.get_by_text("Triggers", exact=True)).to_be_visible()


def open_deployment_page(page: Page, prefect_ui: str, deployment_id: str, flow: str) -> None:
    """A deployment's page by its id (two flows have an `on-demand` deployment), with its Run button."""
    page.goto(f"{prefect_ui}/deployments/deployment/{deployment_id}")
    expect(page.get_by_role("button", name="Run", exact=True)).to_be_visible()
    expect(page.get_by_role("link", name=flow).first).to_be_visible()
    expect(page.get_by_text("Triggers", exact=True)).to_be_visible()


def param_box(page: Page, name: str) -> Locator:
    """The text box of parameter `name` in a Prefect run form (the innermost block with its label)."""
    label = page.get_by_text(f"{name} (Optional)", exact=True)
    expect(label).to_be_visible()
    return page.locator("div", has=label).filter(has=page.locator("textarea")).last.locator("textarea").first


def custom_run(page: Page, profile: str, expected_source: str) -> None:
    """On a deployment page: Run -> Custom run, set `profile`, check the source default."""
    page.get_by_role("button", name="Run", exact=True).click()
    page.get_by_role("menuitem", name="Custom run").click()
    # The parameter descriptions come from the flow's docstring.
    expect(page.get_by_text(re.compile(r"Named recipe: .default. \(best\)"))).to_be_visible()
    # The run form shows the workers' data source as the default of `source`.
    expect(param_box(page, "source")).to_have_value(expected_source)
    box = param_box(page, "profile")
    box.fill(profile)
    expect(box).to_have_value(profile)


DEPLOYMENT_PAGE = re.compile(r"/deployments/deployment/[0-9a-f-]{36}(\?|$)")


def submit_run(page: Page, created: Callable[[], bool] | None = None, attempts: int = 3) -> None:
    """Press Submit; back on the deployment page once the run is created.

    On a loaded machine a press can land while the form is still re-rendering and do nothing
    (the page stays on the form, no run is created). A person presses again: so does this, up to
    ``attempts`` times, but only while ``created()`` (the API) says that no run was created yet.
    """
    for attempt in range(1, attempts + 1):
        page.get_by_role("button", name="Submit").click()
        try:
            expect(page).to_have_url(DEPLOYMENT_PAGE, timeout=15_000)
            return
        except AssertionError:
            if attempt == attempts or (created is not None and created()):
                break
    expect(page).to_have_url(DEPLOYMENT_PAGE)


def open_flow_run(page: Page, prefect_ui: str, flow_run_id: str, tab: str | None = None) -> None:
    page.goto(f"{prefect_ui}/runs/flow-run/{flow_run_id}")
    if tab:
        page.get_by_role("tab", name=tab, exact=True).click()


def task_run_states(page: Page, expected: int, timeout_s: float = 30) -> dict[str, str]:
    """Task-run name -> state, as the Task Runs tab shows them (waits for `expected` cards)."""
    links = page.locator("a[href*='/runs/task-run/']")
    deadline = time.monotonic() + timeout_s
    while links.count() < expected and time.monotonic() < deadline:
        page.wait_for_timeout(500)
    states: dict[str, str] = {}
    for i in range(links.count()):
        link = links.nth(i)
        name = link.inner_text().strip()
        conditions = " or ".join(f"contains(., '{s}')" for s in RUN_STATES)
        card: Locator = link.locator(f"xpath=ancestor::*[{conditions}][1]")
        text = card.inner_text()
        # The card's text after its breadcrumb (flow / flow run / task run) holds the state badge.
        tail = text.split(name, 1)[-1]
        found = [s for s in RUN_STATES if re.search(rf"\b{s}\b", tail)]
        states[name] = found[0] if found else "?"
    return states


# --------------------------------------------------------------------------- MLflow


def mlflow_model_training_view(page: Page, mlflow_url: str) -> None:
    """MLflow 3.17 opens in its GenAI view; a person switches to "Model training"."""
    page.goto(mlflow_url)
    toggle = page.get_by_text("Model training", exact=True).first
    expect(toggle).to_be_visible()
    toggle.click()
    expect(page.get_by_role("link", name="Model registry")).to_be_visible()


def dismiss_mlflow_assistant(page: Page) -> None:
    """Close the "MLflow Assistant" side panel (it opens by itself and hides part of the page)."""
    panel = page.get_by_text("Ask questions about your experiments").filter(visible=True)
    try:
        expect(panel.first).to_be_visible(timeout=5_000)
    except AssertionError:
        return  # closed earlier in this browser profile
    close = page.get_by_role("button", name="Close", exact=True).filter(visible=True)
    close.last.click()
    expect(panel).to_have_count(0)


def dismiss_registry_promo(page: Page) -> None:
    """The first visit to the model registry shows a "new Model Registry UI" modal: "Try it now"."""
    promo = page.get_by_role("dialog").filter(has_text="new Model Registry UI")
    try:
        expect(promo).to_be_visible(timeout=5_000)
    except AssertionError:
        return
    promo.get_by_role("button", name="Try it now").click()
    expect(promo).to_have_count(0)


def image_loaded(img: Locator) -> bool:
    return bool(img.evaluate("e => e.complete && e.naturalWidth > 0 && e.naturalHeight > 0"))


def shown_artifact_image(page: Page, path: re.Pattern[str]) -> dict[str, float]:
    """After clicking an image artifact: its "Path:" line matches ``path`` and the viewer shows the
    image it fetched from the server (as a blob: URL), loaded; returns the image's bounding box."""
    expect(page.get_by_text(path)).to_be_visible()
    image = page.locator("img[src^='blob:']").first
    expect(image).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle())
    assert image_loaded(image)
    box = image.bounding_box()
    assert box, "the artifact image has no box"
    return box
