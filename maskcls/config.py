"""Typed, frozen configuration: data, preprocessing, augmentation, training; named profiles.

A profile is a complete ``PipelineConfig``. Any setting can be overridden with a
dotted ``section.field=value`` string (``train.epochs=3``), which is what the CLI's
``--set`` and the flow's ``overrides`` parameter use.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, SettingsConfigDict
from pydantic_settings.sources.utils import parse_env_vars

from maskcls.errors import ConfigError
from maskcls.origins import FAMILIES

DEFAULT_SOURCE = (
    "https://github.com/balajisrinivas/Face-Mask-Detection/archive/"
    "3ba9a99884732b94ccefb0ead390bb19163c98a8.zip"
)
#: The pin of the default download: (path, sha256) of every file, taken before validation.
DEFAULT_PIN = Path(__file__).parent / "pins" / "face-mask-3ba9a99.json"

EXPERIMENT_NAME = "face-mask"
REGISTERED_MODEL_NAME = "face-mask-classifier"
CHAMPION_ALIAS = "champion"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class DataConfig(_Frozen):
    """How images are read, validated, grouped and split."""

    min_side: int = Field(16, ge=1, description="Images whose shorter side is below this are skipped.")
    max_pixels: int = Field(
        40_000_000, ge=1, description="Decompression-bomb guard: images with more pixels are skipped."
    )
    phash_threshold: int = Field(
        6, ge=0, le=64, description="Hamming distance (of 64 bits) under which two images are near-duplicates."
    )
    test_fraction: float = Field(0.2, gt=0, lt=1, description="Share of near-duplicate clusters held out for test.")
    val_fraction: float = Field(
        0.15, ge=0, lt=1, description="Share of the remaining clusters held out for validation (not augmented)."
    )
    split_seed: int = Field(0, description="Seed of the cluster hash that decides each image's side.")
    max_images: int | None = Field(
        None, ge=2, description="Keep at most this many images (a stable, class-balanced subset)."
    )
    min_per_class: int = Field(4, ge=2, description="A class with fewer valid images than this cannot be split.")
    crop_margin: float = Field(
        0.2, ge=0, le=2, description="Margin around each box of a voc: source part, as a share of the box's "
        "width and height added on each side (a part's ?margin= overrides it)."
    )
    protocol: Literal["leak-free", "article"] = Field(
        "leak-free",
        description="leak-free: split by near-duplicate cluster, exact duplicates once, validation from whole "
        "clusters. article: the 2020 article's split, to reproduce its figures: by file with exact duplicates "
        "kept, 30% of files for test (stratified, seed data.split_seed; data.test_fraction unused), validation a "
        "data.val_fraction share of the augmented training samples. An article run never registers a model.",
    )
    holdout_family: str | None = Field(
        None,
        description="An origin family (maskcls/origins.py, docs/origins.md): its images, and nothing else, are "
        "the test side; their near-duplicates of other families are left out; train/val from the rest. "
        "Such a run never registers a model.",
    )

    @field_validator("holdout_family")
    @classmethod
    def _known_family(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is not None and value not in FAMILIES:
            raise ValueError(f"unknown origin family {value!r}; families are {', '.join(FAMILIES)}")
        if value is not None and info.data.get("protocol") == "article":
            raise ValueError("data.holdout_family cannot be combined with data.protocol=article")
        return value


class PreprocessConfig(_Frozen):
    size: int = Field(50, ge=8, le=512, description="Images are resized to size x size pixels.")
    color_mode: Literal["grayscale", "rgb"] = "grayscale"
    face_crop: bool = Field(
        False, description="Crop each image to its largest detected face (YuNet, maskcls.detect) before "
        "resizing; an image with no face found is used whole. Stored in the model: inference crops the "
        "same way, except in the scanner, which hands the classifier faces it has already cut.")
    face_margin: float = Field(
        0.15, ge=0, le=1, description="Share of the face box's width and height added on every side of a face crop.")

    @property
    def channels(self) -> int:
        return 1 if self.color_mode == "grayscale" else 3


class AugmentConfig(_Frozen):
    enabled: bool = Field(True, description="Expand every training image into its 32 variants.")
    shift: int = Field(4, ge=1, description="Pixels moved by each of the up/down/left/right shifts.")


class TrainConfig(_Frozen):
    conv_filters: tuple[int, ...] = Field((32, 64, 128), min_length=1)
    kernel_size: int = Field(3, ge=1)
    pool: bool = Field(True, description="MaxPool after each convolution (the article has none).")
    dense_units: int = Field(128, ge=1)
    dropout: float = Field(0.5, ge=0, lt=1)
    l2: float = Field(1e-4, ge=0, description="L2 weight penalty on the hidden layers.")
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    epochs: int = Field(6, ge=1)
    seed: int = 42
    steps_per_execution: int = Field(32, ge=1, description="Batches run per call into the compiled graph.")
    # XLA is off by default: on this CPU build it trains ~7x slower than the oneDNN kernels.
    jit_compile: bool = Field(False, description="Compile the train step with XLA.")
    shuffle_buffer: int | None = Field(None, description="None shuffles the whole index each epoch.")
    batch_norm: bool = Field(False, description="Batch normalisation after each convolution (before ReLU).")
    lr_schedule: Literal["constant", "cosine", "plateau"] = Field(
        "constant", description="constant; cosine decay to 0 over all epochs; or halve the rate when the "
        "validation loss stops improving for 1 epoch.")
    early_stopping_patience: int = Field(
        0, ge=0, description="Stop after this many epochs without a lower validation loss and restore the best "
        "weights; 0 trains every epoch (and keeps the last weights).")
    class_weight: Literal["none", "balanced"] = Field(
        "none", description="balanced weighs each class's loss by the inverse of its share of the training samples.")
    # On-the-fly augmentation in tf.data, on top of the 32 fixed variants: every epoch sees new copies.
    aug_brightness: float = Field(0.0, ge=0, le=1, description="Random brightness shift of up to this share of "
                                  "the value range (0 = off).")
    aug_contrast: float = Field(0.0, ge=0, le=1, description="Random contrast factor in [1 - c, 1 + c] (0 = off).")
    aug_rotation: float = Field(0.0, ge=0, le=45, description="Random rotation of up to this many degrees (0 = off).")
    aug_zoom: float = Field(0.0, ge=0, le=0.5, description="Random zoom in or out by up to this share, "
                            "i.e. scale and crop (0 = off).")
    aug_blur: float = Field(0.0, ge=0, le=1, description="Probability of a Gaussian blur (sigma up to 1.5 px) "
                            "per image (0 = off).")


class InferenceConfig(_Frozen):
    """How a trained model is applied, at evaluation and in the registered model."""

    tta_flip: bool = Field(False, description="Average each prediction over the image and its mirror image.")


class PipelineConfig(_Frozen):
    profile: str = "default"
    data: DataConfig = DataConfig()
    preprocess: PreprocessConfig = PreprocessConfig()
    augment: AugmentConfig = AugmentConfig()
    train: TrainConfig = TrainConfig()
    inference: InferenceConfig = InferenceConfig()
    promotion_min_delta: float = Field(0.005, ge=0)
    #: The profile's own data source (parts as for --source; relative ones are taken from
    #: MASKCLS_SHARED_DATASETS). Empty: --source, else MASKCLS_DATA_SOURCE, else the pinned default.
    sources: list[str] = []

    @classmethod
    def sections(cls) -> dict[str, type[BaseModel]]:
        """The config's sections (``data``, ``preprocess``, ...) and their models, in order."""
        return {name: f.annotation for name, f in cls.model_fields.items()
                if isinstance(f.annotation, type) and issubclass(f.annotation, BaseModel)}

    def section_hash(self, *sections: str) -> str:
        """A short stable hash of the named sections (the part of the config a stage depends on)."""
        payload = {s: _plain(getattr(self, s)) for s in sections}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]

    def flat(self) -> dict[str, Any]:
        """Every setting as ``section.field -> value`` (what MLflow logs as params)."""
        out: dict[str, Any] = {}
        for key, value in self.model_dump(mode="json").items():
            if isinstance(value, dict):
                for sub, v in value.items():
                    out[f"{key}.{sub}"] = v
            else:
                out[key] = value
        return out


def _plain(model: Any) -> Any:
    return model.model_dump(mode="json") if isinstance(model, BaseModel) else model


#: The default profile's recipe (see PROFILES), which the three-class profile shares.
DEFAULT_RECIPE: dict[str, Any] = {
    "preprocess": {"color_mode": "rgb"},
    "train": {
        "batch_norm": True,
        "lr_schedule": "cosine",
        "epochs": 4,
        "early_stopping_patience": 2,
        "aug_brightness": 0.2,
        "aug_contrast": 0.2,
        "aug_rotation": 10,
        "aug_zoom": 0.1,
    },
}

PROFILES: dict[str, dict[str, Any]] = {
    # This project's recipe for faces from other collections (docs/experiments.md, sweep
    # 1b87930d): colour, batch normalisation, cosine decay with early stopping on validation
    # loss, and new photometric/geometric copies every epoch on top of the 32 fixed variants;
    # and the face cut out first (preprocess.face_crop): second on validation loss, but the
    # held-out origins (make bench PART=origins) showed that without it the model learns the
    # framing (close crops vs whole portraits) rather than the mask.
    # The field defaults above are the 2020-style 50x50 grayscale CNN every profile starts from.
    "default": {**DEFAULT_RECIPE, "preprocess": {**DEFAULT_RECIPE["preprocess"], "face_crop": True}},
    # The 2020 article: two Conv2D without pooling, Flatten, Dense, sigmoid; L2; Adam 1e-5;
    # batch 16; validation 0.2; 5 epochs. Its leaks are fixed (split before augmentation,
    # near-duplicates grouped), so its validation comes from whole clusters, not variants.
    "seed": {
        "data": {"val_fraction": 0.2},
        "train": {
            "conv_filters": (16, 32),
            "pool": False,
            "dense_units": 32,
            "dropout": 0.0,
            "l2": 1e-3,
            "learning_rate": 1e-5,
            "batch_size": 16,
            "epochs": 5,
        },
    },
    # Three classes: the shared face-mask data, the faces cut from the `tune` scene photos (never
    # the `report` ones: the scan benchmark's), and the incorrectly worn masks with their own
    # correctly worn ones (one mask drawing for both; grouped by person). Registered as
    # face-mask-classifier-3class (maskcls.names.classifier_model_name).
    # The default recipe on three classes: face-mask, the tune scenes' faces, the incorrect masks;
    # without the face crop, which was not measured on three classes (its 0.989 macro recall is
    # without it; half its sources are already cut faces).
    "three-class": {
        **DEFAULT_RECIPE,
        "sources": (
            "face-mask",
            "voc:face-mask-scenes?part=tune",
            "face-mask-incorrect?group=person",
        ),
    },
    # A few seconds on at most 200 images, for tests.
    "smoke": {
        "data": {"max_images": 200},
        "train": {
            "conv_filters": (8, 8),
            "dense_units": 16,
            "batch_size": 32,
            "epochs": 2,
            "steps_per_execution": 1,
            "jit_compile": False,
        },
    },
}


def _coerce(text: str) -> Any:
    """Parse an override value: JSON where it parses (numbers, bools, lists), else the raw text."""
    lowered = text.strip()
    if lowered.lower() in {"true", "false"}:
        return lowered.lower() == "true"
    if lowered.lower() in {"none", "null"}:
        return None
    try:
        return json.loads(lowered)
    except json.JSONDecodeError:
        if "," in lowered:  # conv_filters=16,32
            return [_coerce(part) for part in lowered.split(",")]
        return lowered


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """``["train.epochs=3", "data.max_images=100"]`` -> ``{"train.epochs": 3, ...}``."""
    out: dict[str, Any] = {}
    for item in items or []:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form section.field=value")
        key, value = item.split("=", 1)
        out[key.strip()] = _coerce(value)
    return out


def load_config(profile: str = "default", overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Build the config of a named profile with dotted overrides applied."""
    if profile not in PROFILES:
        raise ConfigError(f"unknown profile {profile!r}; choose one of {', '.join(PROFILES)}")
    tree: dict[str, Any] = json.loads(json.dumps(PROFILES[profile], default=list))
    tree["profile"] = profile
    for dotted, value in (overrides or {}).items():
        parts = dotted.split(".")
        if len(parts) == 1:
            tree[parts[0]] = value
            continue
        if len(parts) != 2 or parts[0] not in PipelineConfig.model_fields:
            raise ConfigError(f"unknown setting {dotted!r}; settings look like train.epochs or data.max_images")
        section_model = PipelineConfig.model_fields[parts[0]].annotation
        if parts[1] not in getattr(section_model, "model_fields", {}):
            known = ", ".join(getattr(section_model, "model_fields", {}))
            raise ConfigError(f"unknown setting {dotted!r}; {parts[0]} has: {known}")
        tree.setdefault(parts[0], {})[parts[1]] = value
    try:
        return PipelineConfig.model_validate(tree)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors()
        )
        raise ConfigError(f"invalid configuration for profile {profile!r}: {problems}") from None


class _MappingEnvSource(EnvSettingsSource):
    """pydantic-settings' environment source reading a given mapping instead of ``os.environ``."""

    def __init__(self, settings_cls: type[BaseSettings], environ: Mapping[str, str]) -> None:
        self._environ = environ  # read by _load_env_vars, which the base __init__ calls
        super().__init__(settings_cls)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return parse_env_vars(self._environ, self.case_sensitive, self.env_ignore_empty, self.env_parse_none_str)


class Settings(BaseSettings):
    """Environment of one entry point: every ``MASKCLS_*`` variable, plus MLFLOW_TRACKING_URI.

    Read when an entry point starts (``Settings.from_env()``), never at import. A field's
    variable is its name upper-cased behind the prefix (``workers`` <- ``MASKCLS_WORKERS``);
    an empty variable counts as unset (compose passes unset variables through as "").
    """

    model_config = SettingsConfigDict(env_prefix="MASKCLS_", env_ignore_empty=True, frozen=True)

    # Data, store, downloads: every entry point.
    home: Path = Field(
        default_factory=lambda: Path.cwd() / ".maskcls",
        validate_default=True,
        description="Root of the store, downloads, locks, local tracking, Prefect state and logs "
        "(default: .maskcls in the current folder).",
    )
    data_source: str = Field(
        DEFAULT_SOURCE,
        description="Folder, zip, http(s) URL of a zip or voc:FOLDER to train on when neither --source nor "
        "the profile gives one; several parts separated by commas (default: the pinned face-mask archive).",
    )
    shared_datasets: Path = Field(
        Path("../shared/datasets"),
        description="Folder the relative parts of a profile's own source list are taken from "
        "(the three-class profile's; relative to the current folder).",
    )
    pins: Annotated[dict[str, Path], NoDecode] = Field(
        default_factory=dict,
        description='Extra pins, "<url or path>=<pin.json>;...", e.g. for a mirror of the default archive '
        "(the default source always uses its committed pin).",
    )
    download_timeout_s: float = Field(
        30.0, gt=0, description="Seconds without an answer before one download attempt gives up."
    )
    data_threads: int = Field(
        0, ge=0, description="Threads that decode, validate and resize images (validate and preprocess "
        "stages); 0 means every core. Results are the same for any number."
    )
    # Tracking.
    tracking_uri: str = Field(
        "",
        validation_alias="MLFLOW_TRACKING_URI",
        validate_default=True,
        description="MLflow tracking server (MLflow's own variable; default: SQLite under MASKCLS_HOME).",
    )
    mlflow_retry_s: float = Field(
        60.0, ge=0, description="Seconds the MLflow client retries a request (with backoff) before failing."
    )
    # The local stack (`make up`).
    bind_host: str = Field("127.0.0.1", description="Address the stack's servers listen on.")
    prefect_port: int = Field(4200, ge=1, le=65535, description="Port of the Prefect server and UI.")
    mlflow_port: int = Field(5000, ge=1, le=65535, description="Port of the MLflow server and UI.")
    serve_port: int = Field(5001, ge=1, le=65535, description="Port `make serve` serves the scanning model on.")
    workers: int = Field(2, ge=0, description="Prefect workers the stack starts.")
    worker_limit: int = Field(1, ge=0, description="Flow runs at once per worker; 0 means no limit.")
    mlflow_workers: int = Field(1, ge=1, description="Processes of the MLflow server.")
    mlflow_allowed_hosts: str | None = Field(
        None,
        description="Host headers the stack's MLflow server accepts (comma-separated, * wildcards; "
        "default: loopback names and the bind address, with and without the port).",
    )
    stack_timeout: float = Field(
        180.0, gt=0, description="Seconds the stack waits for one service to answer its health check."
    )
    # Deployments (flows/deploy.py).
    work_pool: str = Field("maskcls", description="Work pool the deployments run on.")
    retrain_cron: str = Field("0 3 * * 0", description="Cron schedule of the scheduled-retrain deployment.")
    retrain_tz: str = Field("UTC", description="Time zone of MASKCLS_RETRAIN_CRON.")
    # The scan flow (flows/scan.py) and its deployments.
    scanner_classes: Literal[2, 3] = Field(
        2, description="Scanner the scan flow uses: 2 = face-mask-scanner, 3 = face-mask-scanner-3class."
    )
    scan_inbox: Path | None = Field(
        None, description="Folder the scan-inbox deployment scans (default: $MASKCLS_HOME/inbox)."
    )
    scan_cron: str = Field("0 * * * *", description="Cron schedule (UTC) of the scan-inbox deployment.")
    scan_retention_days: float = Field(
        30.0, ge=0, description="Scan runs older than this many days are deleted by the scan flow; 0 keeps all."
    )
    # docker compose only: compose substitutes it; no Python code reads it.
    datasets_dir: Path = Field(
        Path("./data/datasets"), description="(compose only) Host folder mounted read-only at /datasets."
    )

    @field_validator("home")
    @classmethod
    def _absolute_home(cls, value: Path) -> Path:
        return value.expanduser().resolve()

    @field_validator("tracking_uri")
    @classmethod
    def _local_tracking_by_default(cls, value: str, info: ValidationInfo) -> str:
        if value or "home" not in info.data:  # no home: its own error is reported
            return value
        return f"sqlite:///{info.data['home'] / 'mlflow.db'}"

    @field_validator("pins", mode="before")
    @classmethod
    def _parse_pins(cls, value: Any) -> Any:
        if not isinstance(value, str):
            return value
        pins: dict[str, Path] = {}
        for item in value.split(";"):
            if "=" in item.strip():
                src, pin = item.strip().rsplit("=", 1)
                pins[src.strip()] = Path(pin.strip()).expanduser()
        return pins

    @classmethod
    def env_name(cls, field: str) -> str:
        """The environment variable of a field (``workers`` -> ``MASKCLS_WORKERS``)."""
        alias = cls.model_fields[field].validation_alias
        return alias if isinstance(alias, str) else f"{cls.model_config['env_prefix']}{field.upper()}"

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        """Read ``env`` (only it), or the process environment when None; a bad value is a ConfigError."""
        try:
            if env is None:
                return cls()
            return cls(_build_sources=((_MappingEnvSource(cls, env),), {}))
        except ValidationError as exc:
            raise ConfigError(_settings_problems(cls, exc)) from None

    @property
    def data_source_given(self) -> str | None:
        """MASKCLS_DATA_SOURCE as set; None when unset (workers and deployments then keep their default)."""
        return self.data_source if "data_source" in self.model_fields_set else None

    def pin_for(self, source: str) -> Path | None:
        """The pin a source is checked against: DEFAULT_PIN for the default download, else MASKCLS_PINS."""
        return DEFAULT_PIN if source == DEFAULT_SOURCE else self.pins.get(source)

    @property
    def inbox(self) -> Path:
        """MASKCLS_SCAN_INBOX, or $MASKCLS_HOME/inbox."""
        return self.scan_inbox.expanduser().resolve() if self.scan_inbox is not None else self.home / "inbox"

    @property
    def store_dir(self) -> Path:
        return self.home / "store"

    @property
    def downloads_dir(self) -> Path:
        return self.home / "downloads"

    @property
    def artifacts_dir(self) -> Path:
        return self.home / "mlartifacts"

    @property
    def results_dir(self) -> Path:
        return self.home / "prefect-results"

    @property
    def locks_dir(self) -> Path:
        return self.home / "locks"

    @property
    def logs_dir(self) -> Path:
        return self.home / "logs"


def _settings_problems(cls: type[Settings], exc: ValidationError) -> str:
    """One paragraph naming each bad variable, its value and what it should be."""
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = cls.env_name(field) if field in cls.model_fields else field
        value = f"={error['input']!r}" if isinstance(error["input"], str) else ""
        problems.append(f"{name}{value}: {error['msg']}")
    return (
        f"invalid environment setting: {'; '.join(problems)}. Fix the variable, or unset it to use its "
        "default (the README lists every MASKCLS_* setting)."
    )


def build_config(profile: str, epochs: int | None = None, learning_rate: float | None = None,
                 batch_size: int | None = None, max_images: int | None = None,
                 overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """The training flow's config: a profile, then ``overrides`` (``section.field`` -> value; strings
    are parsed like ``--set``), then the flow's own parameters where given."""
    merged: dict[str, Any] = {}
    for key, value in (overrides or {}).items():
        merged.update(parse_overrides([f"{key}={value}"]) if isinstance(value, str) else {key: value})
    for key, value in (("train.epochs", epochs), ("train.learning_rate", learning_rate),
                       ("train.batch_size", batch_size), ("data.max_images", max_images)):
        if value is not None:
            merged[key] = value
    return load_config(profile, merged)
