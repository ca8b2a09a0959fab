"""flows/deploy.py registers exactly maskcls.names.DEPLOYMENTS, the list the stack's status checks."""

from __future__ import annotations

from typing import Any

import pytest

from flows import deploy
from maskcls.config import Settings
from maskcls.names import (
    DEPLOYMENTS,
    FLOW_NAME,
    SCAN_FLOW_NAME,
    SCAN_INBOX,
    SCAN_ON_DEMAND,
    SCHEDULED,
    SWEEP_FLOW_NAME,
    SWEEP_MEMBER,
)


class FakeFlow:
    """What `flow.from_source` returns, recording each `deploy` call instead of calling a server."""

    def __init__(self, calls: list[dict[str, Any]], entrypoint: str) -> None:
        self.calls, self.entrypoint = calls, entrypoint

    def deploy(self, name: str, **kwargs: Any) -> str:
        self.calls.append({"entrypoint": self.entrypoint, "name": name, **kwargs})
        return f"id-{name}"


def test_deploy_all_registers_every_deployment_in_names(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[dict[str, Any]] = []
    pools: list[str] = []
    monkeypatch.setattr(deploy.flow, "from_source", lambda source, entrypoint: FakeFlow(calls, entrypoint))
    monkeypatch.setattr(deploy.prefect_api, "ensure_work_pool", pools.append)
    settings = deploy.DeploySettings.from_settings(Settings.from_env({
        "MASKCLS_WORK_POOL": "pool-x", "MASKCLS_DATA_SOURCE": "/data/x", "MASKCLS_RETRAIN_CRON": "0 1 * * *",
        "MASKCLS_SCAN_INBOX": "/photos/inbox", "MASKCLS_SCAN_CRON": "*/10 * * * *",
    }))

    ids = deploy.deploy_all(settings)

    flow_of = {deploy.ENTRYPOINT: FLOW_NAME, deploy.SWEEP_ENTRYPOINT: SWEEP_FLOW_NAME,
               deploy.SCAN_ENTRYPOINT: SCAN_FLOW_NAME}
    assert [(flow_of[c["entrypoint"]], c["name"]) for c in calls] == list(DEPLOYMENTS)
    assert list(ids) == list(DEPLOYMENTS)
    assert pools == ["pool-x"]
    by_name = {(flow_of[c["entrypoint"]], c["name"]): c for c in calls}
    assert all(c["work_pool_name"] == "pool-x" for c in calls)
    train = [c for c in calls if c["entrypoint"] != deploy.SCAN_ENTRYPOINT]
    assert all(c["parameters"] == {"source": ["/data/x"]} for c in train)
    assert by_name[(FLOW_NAME, SCHEDULED)]["schedule"].cron == "0 1 * * *"
    # The scan flow takes a folder, not a training source.
    assert by_name[(SCAN_FLOW_NAME, SCAN_ON_DEMAND)]["parameters"] == {}
    assert by_name[(SCAN_FLOW_NAME, SCAN_INBOX)]["parameters"] == {"folder": "/photos/inbox"}
    assert by_name[(SCAN_FLOW_NAME, SCAN_INBOX)]["schedule"].cron == "*/10 * * * *"
    assert by_name[(FLOW_NAME, SWEEP_MEMBER)]["concurrency_limit"] is None
    assert all(c["concurrency_limit"].limit == 1 for c in calls if c["name"] != SWEEP_MEMBER)


def test_an_unset_data_source_leaves_the_run_form_empty() -> None:
    settings = deploy.DeploySettings.from_settings(Settings.from_env({}))
    assert settings.data_source is None and settings.default_parameters() == {}
    assert (settings.retrain_cron, settings.retrain_timezone) == ("0 3 * * 0", "UTC")
    assert settings.scan_inbox == Settings.from_env({}).home / "inbox"
