"""The small typed records the training stages pass to each other (paths, fingerprints, counts).

Never image arrays: Prefect pickles results and hashes inputs. Each cached record has
``verify()``, checked before a cache hit is trusted (see ``tasks.caching``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

from maskcls.config import PreprocessConfig
from maskcls.store import FileRef


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True)

    def refs(self) -> list[FileRef]:
        return []

    def verify(self) -> bool:
        return all(ref.verify() for ref in self.refs())


class SideArrays(BaseModel):
    model_config = ConfigDict(frozen=True)

    x: FileRef
    y: FileRef
    paths: list[str]
    sha256: list[str]


class ArraysRecord(_Record):
    classes: list[str]
    root: str
    split_fingerprint: str
    preprocess: PreprocessConfig
    sides: dict[str, SideArrays]
    #: From ``Split``: the share of augmented samples the augment stage makes validation (article protocol).
    val_after_augment: float = 0.0
    val_seed: int = 0

    def refs(self) -> list[FileRef]:
        return [r for s in self.sides.values() for r in (s.x, s.y)]


class AugmentedRecord(_Record):
    x: FileRef
    y: FileRef
    n_images: int
    n_samples: int
    preview: FileRef | None
    #: Validation taken from the augmented samples (article protocol); None: the split's val side.
    val_x: FileRef | None = None
    val_y: FileRef | None = None
    n_val_samples: int = 0

    def refs(self) -> list[FileRef]:
        return [r for r in (self.x, self.y, self.preview, self.val_x, self.val_y) if r is not None]


class ModelRecord(_Record):
    model: FileRef
    history: dict[str, list[float]]
    epoch_seconds: list[float]
    samples_per_s: float
    n_params: int
    n_train_samples: int
    trained_in_run: str

    def refs(self) -> list[FileRef]:
        return [self.model]


class EvalRecord(_Record):
    metrics: dict[str, float]
    files: dict[str, FileRef]
    # Fitted on the validation side (1.0 when it is empty); the registered model applies it.
    temperature: float = 1.0

    def refs(self) -> list[FileRef]:
        return list(self.files.values())


class RegisterRecord(_Record):
    version: str | None
    promotion: str
    reason: str
    model_uri: str | None
