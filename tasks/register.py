"""Stage `register`: log the pyfunc, make a new model version, promote it if it beats the champion."""

from __future__ import annotations

from prefect import get_run_logger, task

from maskcls.config import PipelineConfig, Settings
from tasks.caching import StageCache
from tasks.promotion import register_and_promote
from tasks.records import ArraysRecord, EvalRecord, ModelRecord, RegisterRecord


@task(name="register", cache_policy=StageCache(stage="register",
                                               inputs=("model", "evaluation", "arrays", "tracking_uri",
                                                       "licences")))
def register(model: ModelRecord, evaluation: EvalRecord, arrays: ArraysRecord, config: PipelineConfig,
             settings: Settings, run_id: str, tracking_uri: str, licences: list[str] | None = None) -> RegisterRecord:
    """Log the pyfunc, make a new version of its class set's registered model, and promote it if it
    beats that model's champion.

    ``tracking_uri`` is in the cache key: a version registered in one registry is not one in another.
    ``licences`` (the data's, e.g. CC BY-NC-SA 4.0) tag the version and go into its model card.
    """
    return register_and_promote(model, evaluation, arrays, config, settings, run_id, get_run_logger(), licences)
