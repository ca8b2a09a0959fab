"""The training pipeline's stages, in order: the one list the flow, the sweep, caching and tests read.

Plain data that imports nothing, so the sweep, the code-version walker and the tests can
read it without loading Prefect, MLflow or Keras.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    """One cached stage of the training flow."""

    #: The Prefect task's name, shown in the UI and used as the key of the flow's `stages` result.
    name: str
    #: The task module defining it: the root of the import walk that makes its code version.
    module: str
    #: The `PipelineConfig` sections in its own cache key (those of earlier stages reach it
    #: through its inputs).
    sections: tuple[str, ...]
    #: Its result depends on the data and config only, not on a trained model: the sweep
    #: computes it once and shares it between grid points.
    data: bool
    #: Project modules the stage loads by file path rather than by import (MLflow's
    #: models-from-code file), so no import walk can find them.
    loaded_by_path: tuple[str, ...] = ()


STAGES: tuple[Stage, ...] = (
    Stage("download", "tasks.download", (), data=True),
    Stage("validate", "tasks.validate", ("data",), data=True),
    Stage("split", "tasks.split", ("data",), data=True),
    Stage("preprocess", "tasks.preprocess", ("preprocess",), data=True),
    Stage("augment", "tasks.augment", ("augment",), data=True),
    Stage("train", "tasks.train", ("train",), data=False),
    Stage("evaluate", "tasks.evaluate", ("inference",), data=False),
    Stage("register", "tasks.register", (), data=False,
          loaded_by_path=("tasks.pyfunc_model", "tasks.scanner_model")),
)

#: The stage names in pipeline order.
STAGE_NAMES: tuple[str, ...] = tuple(s.name for s in STAGES)


def stage(name: str) -> Stage:
    """The stage called ``name``."""
    for s in STAGES:
        if s.name == name:
            return s
    raise KeyError(f"no stage {name!r}; stages are {', '.join(STAGE_NAMES)}")


def upto(name: str) -> tuple[Stage, ...]:
    """The stages from the first through ``name``: whose code makes up ``name``'s code version."""
    return STAGES[: STAGE_NAMES.index(stage(name).name) + 1]
