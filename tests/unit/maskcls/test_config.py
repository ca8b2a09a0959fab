"""maskcls.config: profiles, dotted overrides, frozen models, flat params, section hashes, Settings."""

from __future__ import annotations

import copy
from pathlib import Path

import pydantic
import pytest

from maskcls import config as C
from maskcls.config import (
    DEFAULT_SOURCE,
    AugmentConfig,
    ConfigError,
    DataConfig,
    InferenceConfig,
    PipelineConfig,
    PreprocessConfig,
    Settings,
    TrainConfig,
    load_config,
    parse_overrides,
)
from tests.support import REPO

SECTIONS = PipelineConfig.sections()


def test_the_sections() -> None:
    assert SECTIONS == {"data": DataConfig, "preprocess": PreprocessConfig, "augment": AugmentConfig,
                        "train": TrainConfig, "inference": InferenceConfig}


# --- profiles -----------------------------------------------------------------------------


@pytest.mark.parametrize("profile", ["default", "seed", "smoke"])
def test_every_profile_loads_as_a_complete_pipeline_config(profile: str) -> None:
    cfg = load_config(profile)
    assert isinstance(cfg, PipelineConfig)
    assert cfg.profile == profile
    for name, model in SECTIONS.items():
        assert isinstance(getattr(cfg, name), model)


def test_the_documented_profiles_exist() -> None:
    assert {"default", "seed", "smoke"} <= set(C.PROFILES)


def test_default_profile_is_the_field_defaults_plus_the_recipe_levers() -> None:
    cfg = load_config()
    assert cfg.preprocess.color_mode == "rgb" and cfg.train.batch_norm and cfg.preprocess.face_crop
    assert cfg.train.lr_schedule == "cosine" and cfg.train.early_stopping_patience > 0
    # Everything the profile does not name is the field default; seed and smoke start from those.
    assert cfg.data == DataConfig() and cfg.augment == AugmentConfig() and cfg.inference == InferenceConfig()
    assert cfg.train.conv_filters == TrainConfig().conv_filters
    three = load_config("three-class")
    assert (three.train, three.augment) == (cfg.train, cfg.augment)
    assert three.preprocess == cfg.preprocess.model_copy(update={"face_crop": False})
    for profile in ("seed", "smoke"):
        other = load_config(profile)
        assert not other.preprocess.face_crop and other.preprocess.color_mode == "grayscale"
        assert not other.train.batch_norm and other.train.aug_rotation == 0


def test_seed_profile_has_the_article_settings() -> None:
    cfg = load_config("seed")
    assert cfg.train.batch_size == 16
    assert cfg.train.learning_rate == pytest.approx(1e-5)
    assert cfg.train.epochs == 5
    assert cfg.train.pool is False
    assert len(cfg.train.conv_filters) == 2  # two Conv2D layers
    assert cfg.train.l2 > 0  # L2 on the hidden layers
    assert cfg.data.val_fraction == pytest.approx(0.2)
    # The article's input: 50x50 grayscale, 32 variants per image.
    assert cfg.preprocess.size == 50
    assert cfg.preprocess.color_mode == "grayscale"
    assert cfg.preprocess.channels == 1
    assert cfg.augment.enabled is True


def test_smoke_profile_is_small_and_not_compiled() -> None:
    cfg = load_config("smoke")
    assert cfg.data.max_images is not None and cfg.data.max_images <= 200
    assert cfg.train.jit_compile is False
    assert cfg.train.steps_per_execution == 1


def test_every_profile_shares_the_test_side_settings() -> None:
    test_side = {
        p: (c.data.test_fraction, c.data.split_seed, c.data.phash_threshold)
        for p in C.PROFILES
        for c in [load_config(p)]
    }
    assert len(set(test_side.values())) == 1, test_side


def test_unknown_profile_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="no-such-profile"):
        load_config("no-such-profile")


# --- overrides ----------------------------------------------------------------------------


def test_parse_overrides_coerces_types() -> None:
    parsed = parse_overrides(
        [
            "train.epochs=3",
            "train.learning_rate=1e-4",
            "train.jit_compile=false",
            "train.pool=True",
            "data.max_images=none",
            "data.val_fraction=0.25",
            "preprocess.color_mode=rgb",
            "train.conv_filters=16,32",
            "train.kernel_size= 5 ",
        ]
    )
    assert parsed == {
        "train.epochs": 3,
        "train.learning_rate": 1e-4,
        "train.jit_compile": False,
        "train.pool": True,
        "data.max_images": None,
        "data.val_fraction": 0.25,
        "preprocess.color_mode": "rgb",
        "train.conv_filters": [16, 32],
        "train.kernel_size": 5,
    }
    assert type(parsed["train.epochs"]) is int
    assert type(parsed["train.learning_rate"]) is float
    assert type(parsed["train.jit_compile"]) is bool


def test_parse_overrides_keeps_everything_after_the_first_equals_sign() -> None:
    assert parse_overrides(["profile=a=b"]) == {"profile": "a=b"}


def test_parse_overrides_of_nothing_is_empty() -> None:
    assert parse_overrides(None) == {}
    assert parse_overrides([]) == {}


def test_parse_overrides_rejects_an_item_without_equals() -> None:
    with pytest.raises(ConfigError, match="train.epochs"):
        parse_overrides(["train.epochs"])


def test_load_config_applies_overrides_with_type_coercion() -> None:
    cfg = load_config(
        "seed",
        parse_overrides(["train.epochs=2", "train.conv_filters=8,16", "preprocess.color_mode=rgb", "data.max_images=50"]),
    )
    assert cfg.train.epochs == 2
    assert cfg.train.conv_filters == (8, 16)
    assert isinstance(cfg.train.conv_filters, tuple)
    assert cfg.preprocess.color_mode == "rgb"
    assert cfg.preprocess.channels == 3
    assert cfg.data.max_images == 50
    # The profile's other settings survive an override in the same section.
    assert cfg.train.batch_size == 16
    assert cfg.train.learning_rate == pytest.approx(1e-5)
    assert cfg.data.val_fraction == pytest.approx(0.2)


def test_overrides_do_not_leak_into_the_profile_table() -> None:
    before = copy.deepcopy(C.PROFILES)
    load_config("smoke", {"train.epochs": 9, "data.max_images": 10})
    assert C.PROFILES == before
    assert load_config("smoke").train.epochs == before["smoke"]["train"]["epochs"]
    assert load_config("smoke").data.max_images == before["smoke"]["data"]["max_images"]


@pytest.mark.parametrize("dotted", ["bogus.epochs", "train.bogus_field", "train.epochs.deep"])
def test_unknown_setting_is_a_config_error_naming_it(dotted: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("default", {dotted: 1})
    assert dotted in str(exc.value)


def test_top_level_setting_can_be_overridden() -> None:
    cfg = load_config("default", parse_overrides(["promotion_min_delta=0.02"]))
    assert cfg.promotion_min_delta == pytest.approx(0.02)
    assert cfg.flat()["promotion_min_delta"] == pytest.approx(0.02)
    with pytest.raises(ConfigError, match="promotion_min_delta"):
        load_config("default", {"promotion_min_delta": -1})


def test_unknown_top_level_setting_is_a_config_error_naming_it() -> None:
    with pytest.raises(ConfigError, match="not_a_setting"):
        load_config("default", {"not_a_setting": 1})


@pytest.mark.parametrize(
    "override, field",
    [
        ("train.epochs=0", "epochs"),
        ("train.epochs=abc", "epochs"),
        ("train.epochs=2.5", "epochs"),
        ("train.learning_rate=0", "learning_rate"),
        ("preprocess.color_mode=cmyk", "color_mode"),
        ("preprocess.size=4", "size"),
        ("data.test_fraction=1.5", "test_fraction"),
        ("data.phash_threshold=65", "phash_threshold"),
        ("train.conv_filters=[]", "conv_filters"),
        ("augment.shift=0", "shift"),
    ],
)
def test_invalid_value_is_a_config_error_naming_the_field(override: str, field: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_config("default", parse_overrides([override]))
    assert field in str(exc.value)
    assert not isinstance(exc.value, pydantic.ValidationError)


def test_config_error_is_a_value_error() -> None:
    assert issubclass(ConfigError, ValueError)


# --- frozen, flat, hashes -----------------------------------------------------------------


def test_configs_are_frozen() -> None:
    cfg = load_config()
    with pytest.raises(pydantic.ValidationError):
        cfg.train.epochs = 99  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.data = DataConfig()  # type: ignore[misc]
    with pytest.raises(pydantic.ValidationError):
        cfg.promotion_min_delta = 0.1  # type: ignore[misc]
    assert cfg.train.epochs == load_config().train.epochs


def test_configs_forbid_unknown_fields() -> None:
    with pytest.raises(pydantic.ValidationError):
        TrainConfig(not_a_field=1)  # type: ignore[call-arg]


@pytest.mark.parametrize("profile", ["default", "seed", "smoke"])
def test_flat_has_every_field(profile: str) -> None:
    cfg = load_config(profile)
    flat = cfg.flat()
    expected: dict[str, object] = {}
    for name, model in SECTIONS.items():
        section = getattr(cfg, name)
        for field in model.model_fields:
            value = getattr(section, field)
            expected[f"{name}.{field}"] = list(value) if isinstance(value, tuple) else value
    for field in PipelineConfig.model_fields:
        if field not in SECTIONS:
            expected[field] = getattr(cfg, field)
    assert flat == expected


def test_section_hash_changes_only_with_its_own_sections() -> None:
    base = load_config("default")
    trained = load_config("default", {"train.epochs": base.train.epochs + 1})
    resized = load_config("default", {"preprocess.size": 32})
    assert base.section_hash("data", "preprocess") == trained.section_hash("data", "preprocess")
    assert base.section_hash("augment") == trained.section_hash("augment")
    assert base.section_hash("train") != trained.section_hash("train")
    assert base.section_hash("preprocess", "train") != trained.section_hash("preprocess", "train")
    assert base.section_hash("train") == resized.section_hash("train")
    assert base.section_hash("preprocess") != resized.section_hash("preprocess")
    # The profile name alone is not a setting a stage depends on.
    assert load_config("default").section_hash("data") == PipelineConfig(profile="other").section_hash("data")


def test_section_hash_is_stable_and_short() -> None:
    a = load_config("seed").section_hash("data", "train")
    b = load_config("seed").section_hash("data", "train")
    assert a == b
    assert len(a) == 16
    int(a, 16)


# --- Settings -----------------------------------------------------------------------------


def test_settings_from_env_reads_the_given_dict(tmp_path: Path) -> None:
    env = {
        "MASKCLS_HOME": str(tmp_path / "home"),
        "MASKCLS_DATA_SOURCE": "/data/faces.zip",
        "MLFLOW_TRACKING_URI": "http://127.0.0.1:5000",
    }
    s = Settings.from_env(env)
    assert s.home == (tmp_path / "home").resolve()
    assert s.data_source == "/data/faces.zip"
    assert s.tracking_uri == "http://127.0.0.1:5000"
    assert s.store_dir == s.home / "store"
    assert s.downloads_dir.parent == s.home
    assert s.locks_dir.parent == s.home


def test_settings_default_tracking_is_sqlite_under_home(tmp_path: Path) -> None:
    s = Settings.from_env({"MASKCLS_HOME": str(tmp_path)})
    home = tmp_path.resolve()
    assert s.tracking_uri.startswith("sqlite:///")
    db = Path(s.tracking_uri[len("sqlite:///") :])
    assert db.is_absolute()
    assert db.parent == home
    assert s.data_source == DEFAULT_SOURCE


def test_settings_use_only_the_dict_not_the_process_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MASKCLS_HOME", str(tmp_path / "from-os"))
    monkeypatch.setenv("MASKCLS_DATA_SOURCE", "from-os")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://from-os")
    monkeypatch.chdir(tmp_path)
    s = Settings.from_env({})
    assert s.home == (tmp_path / ".maskcls").resolve()
    assert s.data_source == DEFAULT_SOURCE
    assert s.tracking_uri == f"sqlite:///{s.home / 'mlflow.db'}"
    # And with no dict at all, the process environment is read (at call time).
    s2 = Settings.from_env()
    assert s2.home == (tmp_path / "from-os").resolve()
    assert s2.data_source == "from-os"
    assert s2.tracking_uri == "http://from-os"


def test_settings_expand_user_in_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings.from_env({"MASKCLS_HOME": "~/mk"})
    assert s.home == (tmp_path / "mk").resolve()


def test_settings_read_every_variable_with_its_type(tmp_path: Path) -> None:
    env = {
        "MASKCLS_HOME": str(tmp_path),
        "MASKCLS_PINS": f" https://mirror/x.zip = {tmp_path}/pin.json ; no-equals-sign ;/data/y.zip=~/y.json",
        "MASKCLS_DOWNLOAD_TIMEOUT_S": "2.5",
        "MASKCLS_MLFLOW_RETRY_S": "6",
        "MASKCLS_BIND_HOST": "0.0.0.0",
        "MASKCLS_PREFECT_PORT": "4300",
        "MASKCLS_MLFLOW_PORT": "5300",
        "MASKCLS_WORKERS": "3",
        "MASKCLS_WORKER_LIMIT": "0",
        "MASKCLS_MLFLOW_WORKERS": "4",
        "MASKCLS_MLFLOW_ALLOWED_HOSTS": "mlflow,localhost",
        "MASKCLS_STACK_TIMEOUT": "90",
        "MASKCLS_WORK_POOL": "other-pool",
        "MASKCLS_RETRAIN_CRON": "0 4 * * 1",
        "MASKCLS_RETRAIN_TZ": "Europe/Paris",
        "MASKCLS_DATASETS_DIR": "/srv/datasets",
    }
    s = Settings.from_env(env)
    assert s.pins == {"https://mirror/x.zip": tmp_path / "pin.json", "/data/y.zip": Path("~/y.json").expanduser()}
    assert s.pin_for("https://mirror/x.zip") == tmp_path / "pin.json"
    assert s.pin_for(DEFAULT_SOURCE) == C.DEFAULT_PIN
    assert s.pin_for("elsewhere") is None
    assert (s.download_timeout_s, s.mlflow_retry_s, s.stack_timeout) == (2.5, 6.0, 90.0)
    assert (s.bind_host, s.prefect_port, s.mlflow_port) == ("0.0.0.0", 4300, 5300)
    assert (s.workers, s.worker_limit, s.mlflow_workers) == (3, 0, 4)
    assert s.mlflow_allowed_hosts == "mlflow,localhost"
    assert (s.work_pool, s.retrain_cron, s.retrain_tz) == ("other-pool", "0 4 * * 1", "Europe/Paris")
    assert s.datasets_dir == Path("/srv/datasets")


def test_settings_defaults_are_the_documented_ones(tmp_path: Path) -> None:
    s = Settings.from_env({"MASKCLS_HOME": str(tmp_path)})
    assert s.pins == {}
    assert (s.download_timeout_s, s.mlflow_retry_s, s.stack_timeout) == (30.0, 60.0, 180.0)
    assert (s.bind_host, s.prefect_port, s.mlflow_port) == ("127.0.0.1", 4200, 5000)
    assert (s.workers, s.worker_limit, s.mlflow_workers, s.mlflow_allowed_hosts) == (2, 1, 1, None)
    assert (s.work_pool, s.retrain_cron, s.retrain_tz) == ("maskcls", "0 3 * * 0", "UTC")
    assert s.logs_dir == s.home / "logs"


def test_settings_empty_variables_count_as_unset(tmp_path: Path) -> None:
    # docker compose passes an unset variable through as "".
    env = {name: "" for name in map(Settings.env_name, Settings.model_fields)}
    env["MASKCLS_HOME"] = str(tmp_path)
    s = Settings.from_env(env)
    assert s.data_source == DEFAULT_SOURCE and s.data_source_given is None
    assert s.workers == 2
    assert s.tracking_uri == f"sqlite:///{tmp_path.resolve() / 'mlflow.db'}"


def test_unknown_maskcls_variables_are_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    # e.g. the fault tests' MASKCLS_TEST_PAUSE hooks, read by the test harness itself
    monkeypatch.setenv("MASKCLS_TEST_PAUSE", "train")
    assert Settings.from_env().workers == 2
    assert Settings.from_env({"MASKCLS_NOT_A_SETTING": "1"}).workers == 2


def test_settings_data_source_given_only_when_set(tmp_path: Path) -> None:
    assert Settings.from_env({}).data_source_given is None
    s = Settings.from_env({"MASKCLS_DATA_SOURCE": DEFAULT_SOURCE})
    assert s.data_source_given == DEFAULT_SOURCE


def test_settings_env_name_is_the_prefixed_field_or_its_alias() -> None:
    assert Settings.env_name("workers") == "MASKCLS_WORKERS"
    assert Settings.env_name("download_timeout_s") == "MASKCLS_DOWNLOAD_TIMEOUT_S"
    assert Settings.env_name("tracking_uri") == "MLFLOW_TRACKING_URI"


@pytest.mark.parametrize(
    "name, value, expected",
    [
        ("MASKCLS_WORKERS", "two", "valid integer"),
        ("MASKCLS_WORKERS", "-1", "greater than or equal to 0"),
        ("MASKCLS_PREFECT_PORT", "70000", "less than or equal to 65535"),
        ("MASKCLS_DOWNLOAD_TIMEOUT_S", "0", "greater than 0"),
        ("MASKCLS_MLFLOW_RETRY_S", "soon", "valid number"),
    ],
)
def test_a_bad_variable_is_a_config_error_naming_it(name: str, value: str, expected: str) -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({name: value})
    text = exc.value.message
    assert f"{name}={value!r}" in text
    assert expected in text
    assert "\n" not in text  # one paragraph


def test_every_bad_variable_is_named_at_once() -> None:
    with pytest.raises(ConfigError) as exc:
        Settings.from_env({"MASKCLS_WORKERS": "x", "MASKCLS_MLFLOW_PORT": "y"})
    assert "MASKCLS_WORKERS='x'" in exc.value.message
    assert "MASKCLS_MLFLOW_PORT='y'" in exc.value.message


def test_settings_from_the_process_environment_validate_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MASKCLS_WORKERS", "many")
    with pytest.raises(ConfigError, match="MASKCLS_WORKERS='many'"):
        Settings.from_env()


def test_settings_are_frozen(tmp_path: Path) -> None:
    s = Settings.from_env({"MASKCLS_HOME": str(tmp_path)})
    with pytest.raises(pydantic.ValidationError):
        s.workers = 5  # type: ignore[misc]


# Set by the stack on its own processes to recognise them later (read from /proc/<pid>/environ
# of other processes): markers, not settings of the process that reads them.
_PROCESS_MARKERS = {"MASKCLS_STACK_TAG", "MASKCLS_STACK_SERVICE"}
_SCANNED = ("maskcls", "tasks", "flows", "stack", "benchmarks", "mlflow", "docker", "docker-compose.yml",
            ".env.example", "Makefile", "Dockerfile")


def test_every_maskcls_variable_in_the_tree_is_a_settings_field() -> None:
    import re

    root = REPO
    named: set[str] = set()
    for entry in _SCANNED:
        path = root / entry
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
        for file in files:
            if file.suffix in {".pyc", ".png", ".jpg", ".json", ".onnx", ".npy"}:
                continue
            named |= set(re.findall(r"\bMASKCLS_[A-Z][A-Z0-9_]*", file.read_text(errors="replace")))
    fields = {Settings.env_name(f) for f in Settings.model_fields}
    assert named - _PROCESS_MARKERS <= fields, f"not a Settings field: {sorted(named - _PROCESS_MARKERS - fields)}"
    assert "MASKCLS_HOME" in named  # the scan reads the tree


def test_the_readme_table_lists_every_setting_with_its_default() -> None:
    import re

    readme = (REPO / "README.md").read_text()
    section = readme[readme.index("## Configuration") :]
    rows = dict(re.findall(r"^\| `([A-Z_]+)` \| ([^|]+) \|", section, flags=re.M))
    assert set(rows) == {Settings.env_name(f) for f in Settings.model_fields}
    for name, field in Settings.model_fields.items():
        default = field.default
        if isinstance(default, (int, float, str)) and default not in ("", DEFAULT_SOURCE):
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert rows[Settings.env_name(name)].strip() == f"`{shown}`", name
