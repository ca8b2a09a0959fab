"""The stage registry (maskcls/stages.py) against the task modules it names: order, names,
the config sections in each cache key, the data stages the sweep shares."""

from __future__ import annotations

import typing

import pytest
from prefect import Task

from maskcls.config import PipelineConfig
from maskcls.stages import STAGE_NAMES, STAGES, stage, upto
from tasks import augment, download, evaluate, preprocess, register, split, train, tracking, validate
from tasks.caching import StageCache
from tasks.codeversion import module_file

TASK_MODULES = {m.__name__: m for m in (download, validate, split, preprocess, augment, train, evaluate, register)}
SECTION_OF = {model: name for name, model in PipelineConfig.sections().items()}


def test_the_stages_in_pipeline_order() -> None:
    assert STAGE_NAMES == ("download", "validate", "split", "preprocess", "augment", "train", "evaluate", "register")
    assert [s.name for s in upto("split")] == ["download", "validate", "split"]
    assert stage("train").module == "tasks.train"
    with pytest.raises(KeyError, match="no stage 'fit'"):
        stage("fit")


def test_data_stages_come_first() -> None:
    # The sweep shares the data stages between grid points: they must precede every model stage.
    flags = [s.data for s in STAGES]
    assert flags == sorted(flags, reverse=True)
    assert [s.name for s in STAGES if s.data] == ["download", "validate", "split", "preprocess", "augment"]


def test_sections_are_config_sections() -> None:
    for s in STAGES:
        assert set(s.sections) <= set(PipelineConfig.model_fields), s


def _stage_task(module) -> Task:
    tasks = [v for v in vars(module).values() if isinstance(v, Task) and v.__module__ == module.__name__]
    assert len(tasks) == 1, (module.__name__, tasks)
    return tasks[0]


@pytest.mark.parametrize("s", STAGES, ids=STAGE_NAMES)
def test_each_stage_module_defines_its_task_and_cache_key(s) -> None:
    task = _stage_task(TASK_MODULES[s.module])
    assert task.name == s.name
    policy = task.cache_policy
    assert isinstance(policy, StageCache) and policy.stage == s.name
    hints = typing.get_type_hints(task.fn)
    assert set(policy.inputs) <= set(hints), (s.name, policy.inputs)
    keyed_sections = {SECTION_OF[hints[name]] for name in policy.inputs if hints[name] in SECTION_OF}
    assert keyed_sections == set(s.sections), s.name


def test_every_stage_has_a_task_module() -> None:
    assert {s.module for s in STAGES} == set(TASK_MODULES)


def test_the_files_loaded_by_path_are_the_models_from_code_files() -> None:
    # tracking.log_pyfunc and tracking.register_scanner hand MLflow these files by path: the registry must name them.
    assert stage("register").loaded_by_path == ("tasks.pyfunc_model", "tasks.scanner_model")
    assert module_file("tasks.pyfunc_model") == tracking.PYFUNC_CODE
    assert module_file("tasks.scanner_model") == tracking.SCANNER_CODE
