"""maskcls.train (and model): tf.data input, fit + save + load, determinism, multi-class, learning."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from maskcls.config import TrainConfig
from maskcls.model import build_model, predict_proba
from maskcls.train import RowReader, load_model, make_dataset, train_model

SIDE = 16


def tiny_cfg(**kw) -> TrainConfig:
    base = dict(
        conv_filters=(4,),
        dense_units=8,
        epochs=2,
        batch_size=16,
        jit_compile=False,
        steps_per_execution=1,
        learning_rate=1e-2,
        dropout=0.0,
        l2=0.0,
        seed=7,
    )
    base.update(kw)
    return TrainConfig(**base)


def bright_dark(n: int, seed: int, n_classes: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Class k images have pixel values around a class-specific brightness (trivially separable)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % n_classes
    rng.shuffle(y)
    centers = np.linspace(30, 225, n_classes)
    x = centers[y][:, None, None, None] + rng.normal(0, 12, size=(n, SIDE, SIDE, 1))
    return np.clip(x, 0, 255).astype(np.uint8), y.astype(np.int64)


def quiet(_: str) -> None:
    pass


# --- make_dataset ------------------------------------------------------------------------------


def _saved_memmap(x: np.ndarray, tmp_path) -> np.ndarray:
    np.save(tmp_path / "x.npy", x)
    return np.load(tmp_path / "x.npy", mmap_mode="r")


def test_row_reader_reads_memmapped_rows_from_the_file_without_mapping_them(tmp_path) -> None:
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, size=(50, 3, 5, 2), dtype=np.uint8)
    mapped = _saved_memmap(x, tmp_path)
    reader = RowReader(mapped)
    assert reader.fd is not None
    for idx in ([0], [49], [3, 4, 5, 9, 10, 30], list(range(50)), [7, 8]):
        idx = np.asarray(idx)
        got = reader(idx)
        assert got.dtype == np.uint8 and not isinstance(got, np.memmap)
        np.testing.assert_array_equal(got, x[idx])
    # in-memory arrays are indexed as they are
    np.testing.assert_array_equal(RowReader(x)(np.array([2, 40])), x[[2, 40]])


def test_row_reader_names_the_file_on_a_short_read(tmp_path) -> None:
    mapped = _saved_memmap(np.zeros((10, 4), dtype=np.uint8), tmp_path)
    reader = RowReader(mapped)
    with open(tmp_path / "x.npy", "r+b") as f:  # the file shrinks under the reader
        f.truncate(reader.offset + 4 * 6)
    with pytest.raises(OSError, match=r"x\.npy: short read"):
        reader(np.array([5, 6, 7]))


def test_make_dataset_from_a_memmap_yields_the_same_batches_as_from_memory(tmp_path) -> None:
    rng = np.random.default_rng(2)
    x = rng.integers(0, 256, size=(45, 4, 4, 1), dtype=np.uint8)
    y = np.arange(45) % 2
    mapped = _saved_memmap(x, tmp_path)
    for a, b in zip(make_dataset(x, y, 8, shuffle=True, seed=5, n_classes=2),
                    make_dataset(mapped, y, 8, shuffle=True, seed=5, n_classes=2), strict=True):
        np.testing.assert_array_equal(a[0].numpy(), b[0].numpy())
        np.testing.assert_array_equal(a[1].numpy(), b[1].numpy())


@pytest.mark.parametrize("shuffle", [False, True])
def test_make_dataset_scales_to_unit_float32_and_yields_every_sample_once(shuffle: bool) -> None:
    rng = np.random.default_rng(0)
    n = 37  # not a multiple of the batch size
    x = rng.integers(0, 256, size=(n, 4, 4, 1), dtype=np.uint8)
    x[0] = 0
    x[1] = 255
    y = np.arange(n) % 2
    ds = make_dataset(x, y, 8, shuffle=shuffle, seed=3, n_classes=2)
    for _epoch in range(2):
        xs, ys = [], []
        for bx, by in ds:
            assert bx.dtype.name == "float32"
            assert by.dtype.name == "float32"  # binary labels as floats for binary cross-entropy
            assert bx.shape[0] <= 8
            xs.append(bx.numpy())
            ys.append(by.numpy())
        got = np.concatenate(xs)
        labels = np.concatenate(ys)
        assert got.shape == (n, 4, 4, 1)
        assert got.min() >= 0.0 and got.max() <= 1.0
        # Map each yielded sample back to its source by its pixels: all n, once each, labels intact.
        back = np.rint(got * 255).astype(np.uint8)
        keys = [b.tobytes() for b in back]
        source = {x[k].tobytes(): k for k in range(n)}
        assert len(source) == n
        order = [source[k] for k in keys]
        assert sorted(order) == list(range(n))
        np.testing.assert_array_equal(labels, y[order])
        np.testing.assert_allclose(got, x[order].astype(np.float32) / 255.0, rtol=0, atol=1e-6)
        if not shuffle:
            assert order == list(range(n))


def test_make_dataset_shuffles_differently_each_epoch() -> None:
    # Which samples share a batch changes every epoch (within a batch, rows are read in
    # index order, which the model cannot tell apart).
    x = np.arange(64, dtype=np.uint8).reshape(64, 1, 1, 1)
    ds = make_dataset(x, np.zeros(64), 8, shuffle=True, seed=1, n_classes=2)
    values = [sorted(np.rint(b.numpy().ravel() * 255).astype(int).tolist()) for b, _ in ds.repeat(2)]
    epochs = [values[:8], values[8:]]
    assert sorted(v for batch in epochs[0] for v in batch) == list(range(64))
    assert sorted(v for batch in epochs[1] for v in batch) == list(range(64))
    assert epochs[0] != epochs[1]
    assert epochs[0] != [list(range(k, k + 8)) for k in range(0, 64, 8)]


def test_make_dataset_multiclass_labels_are_integers() -> None:
    x = np.zeros((6, 2, 2, 1), np.uint8)
    y = np.array([0, 1, 2, 0, 1, 2])
    ds = make_dataset(x, y, 4, shuffle=False, seed=0, n_classes=3)
    labels = np.concatenate([b.numpy() for _, b in ds])
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, y)


# --- train_model ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("train") / "models" / "m.keras"
    x, y = bright_dark(64, seed=1)
    xv, yv = bright_dark(32, seed=2)
    cfg = tiny_cfg()
    logs: list[str] = []
    result = train_model(x, y, xv, yv, cfg, 2, out, log=logs.append)
    return out, result, cfg, logs, (xv, yv)


def test_train_model_saves_a_loadable_keras_file(trained) -> None:
    out, _, _, _, (xv, _) = trained
    assert out.is_file() and out.suffix == ".keras"
    model = load_model(out)
    assert model.input_shape == (None, SIDE, SIDE, 1)
    assert model.output_shape == (None, 1)
    p = predict_proba(model, xv.astype(np.float32) / 255.0)
    assert p.shape == (len(xv), 2)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-6)
    assert np.all((p >= 0) & (p <= 1))


def test_train_model_history_has_every_metric_per_epoch(trained) -> None:
    _, result, cfg, logs, _ = trained
    history = result["history"]
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        assert key in history, history.keys()
        assert len(history[key]) == cfg.epochs
        assert all(isinstance(v, float) and np.isfinite(v) for v in history[key])
    for key in ("accuracy", "val_accuracy"):
        assert all(0.0 <= v <= 1.0 for v in history[key])
    assert len(result["epoch_seconds"]) == cfg.epochs
    assert result["samples_per_s"] > 0
    assert result["n_params"] > 0
    assert any("epoch 2/2" in line for line in logs)


def test_train_model_without_validation_has_no_val_metrics(tmp_path: Path) -> None:
    x, y = bright_dark(32, seed=3)
    result = train_model(x, y, None, None, tiny_cfg(epochs=1), 2, tmp_path / "m.keras", log=quiet)
    assert set(result["history"]) >= {"loss", "accuracy"}
    assert not any(k.startswith("val_") for k in result["history"])


def _weights(path: Path) -> list[np.ndarray]:
    return [np.asarray(w) for w in load_model(path).get_weights()]


def test_same_seed_twice_gives_identical_weights(tmp_path: Path, trained) -> None:
    first, _, cfg, _, _ = trained
    x, y = bright_dark(64, seed=1)
    xv, yv = bright_dark(32, seed=2)
    again = tmp_path / "again.keras"
    train_model(x, y, xv, yv, cfg, 2, again, log=quiet)
    w1, w2 = _weights(first), _weights(again)
    assert len(w1) == len(w2)
    for a, b in zip(w1, w2):
        np.testing.assert_array_equal(a, b)
    # The comparison is not vacuous: another seed gives other weights.
    other = tmp_path / "other.keras"
    train_model(x, y, xv, yv, tiny_cfg(seed=cfg.seed + 1), 2, other, log=quiet)
    assert any(not np.array_equal(a, b) for a, b in zip(w1, _weights(other)))


def test_three_classes_get_a_softmax_and_train(tmp_path: Path) -> None:
    x, y = bright_dark(96, seed=4, n_classes=3)
    xv, yv = bright_dark(30, seed=5, n_classes=3)
    out = tmp_path / "three.keras"
    result = train_model(x, y, xv, yv, tiny_cfg(epochs=2), 3, out, log=quiet)
    model = load_model(out)
    assert model.output_shape == (None, 3)
    assert model.layers[-1].get_config()["activation"] == "softmax"
    p = predict_proba(model, xv.astype(np.float32) / 255.0)
    assert p.shape == (30, 3)
    np.testing.assert_allclose(p.sum(axis=1), 1.0, atol=1e-5)
    assert all(np.isfinite(v) for v in result["history"]["loss"])
    assert "val_accuracy" in result["history"]


def test_the_model_learns_a_trivially_separable_task(tmp_path: Path) -> None:
    x, y = bright_dark(128, seed=6)
    xv, yv = bright_dark(64, seed=7)
    out = tmp_path / "learn.keras"
    result = train_model(x, y, xv, yv, tiny_cfg(epochs=4), 2, out, log=quiet)
    # Score on fresh images, independently of Keras' own metric.
    xt, yt = bright_dark(200, seed=8)
    p = predict_proba(load_model(out), xt.astype(np.float32) / 255.0)
    accuracy = float((p.argmax(axis=1) == yt).mean())
    assert accuracy > 0.9, (accuracy, result["history"])
    assert result["history"]["loss"][-1] < result["history"]["loss"][0]


# --- model ------------------------------------------------------------------------------------


def test_build_model_follows_the_config() -> None:
    cfg = tiny_cfg(conv_filters=(3, 5), pool=False, dense_units=6, l2=1e-3)
    model = build_model(cfg, (SIDE, SIDE, 1), 2)
    kinds = [type(layer).__name__ for layer in model.layers]
    assert kinds == ["Conv2D", "Conv2D", "Flatten", "Dense", "Dense"]
    assert [layer.filters for layer in model.layers[:2]] == [3, 5]
    assert model.layers[3].units == 6
    assert model.layers[-1].get_config()["activation"] == "sigmoid"
    hidden = [model.layers[i] for i in (0, 1, 3)]
    assert all(layer.kernel_regularizer is not None for layer in hidden)
    assert model.layers[-1].kernel_regularizer is None
    pooled = build_model(tiny_cfg(conv_filters=(3, 5), pool=True, dropout=0.2), (SIDE, SIDE, 1), 2)
    kinds = [type(layer).__name__ for layer in pooled.layers]
    assert kinds.count("MaxPooling2D") == 2 and "Dropout" in kinds


def test_build_model_needs_two_classes() -> None:
    with pytest.raises(ValueError):
        build_model(tiny_cfg(), (SIDE, SIDE, 1), 1)
