"""build_model(config) -> keras.Model: the article's CNN with its sizes in config."""

from __future__ import annotations

import keras
from keras import layers, regularizers

from maskcls.config import TrainConfig
from maskcls.inference import probability_columns


def build_model(cfg: TrainConfig, input_shape: tuple[int, int, int], n_classes: int) -> keras.Model:
    """Conv2D x N (optionally pooled), Flatten, Dense, output layer; L2 on the hidden layers.

    Two classes get one sigmoid unit (binary cross-entropy); more get a softmax.
    """
    if n_classes < 2:
        raise ValueError(f"need at least two classes, got {n_classes}")
    reg = regularizers.L2(cfg.l2) if cfg.l2 > 0 else None
    model = keras.Sequential(name="maskcls_cnn")
    model.add(keras.Input(shape=input_shape))
    for filters in cfg.conv_filters:
        if cfg.batch_norm:  # the normalisation's shift replaces the convolution's bias
            model.add(layers.Conv2D(filters, cfg.kernel_size, use_bias=False, kernel_regularizer=reg))
            model.add(layers.BatchNormalization())
            model.add(layers.Activation("relu"))
        else:
            model.add(layers.Conv2D(filters, cfg.kernel_size, activation="relu", kernel_regularizer=reg))
        if cfg.pool:
            model.add(layers.MaxPooling2D(2))
    model.add(layers.Flatten())
    if cfg.dropout > 0:
        model.add(layers.Dropout(cfg.dropout, seed=cfg.seed))
    model.add(layers.Dense(cfg.dense_units, activation="relu", kernel_regularizer=reg))
    if n_classes == 2:
        model.add(layers.Dense(1, activation="sigmoid"))
    else:
        model.add(layers.Dense(n_classes, activation="softmax"))
    return model


def loss_for(n_classes: int) -> str:
    return "binary_crossentropy" if n_classes == 2 else "sparse_categorical_crossentropy"


def learning_rate(cfg: TrainConfig, steps_per_epoch: int) -> float | keras.optimizers.schedules.LearningRateSchedule:
    """The optimizer's rate: a number, or cosine decay to 0 over every step of every epoch."""
    if cfg.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=max(1, steps_per_epoch * cfg.epochs))
    return cfg.learning_rate


def compile_model(model: keras.Model, cfg: TrainConfig, n_classes: int, steps_per_epoch: int = 1) -> keras.Model:
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate(cfg, steps_per_epoch)),
        loss=loss_for(n_classes),
        metrics=["accuracy"],
        steps_per_execution=cfg.steps_per_execution,
        jit_compile=cfg.jit_compile,
    )
    return model


def predict_proba(model: keras.Model, x_scaled, batch_size: int = 256, tta_flip: bool = False):
    """Class probabilities (n, n_classes) whatever the output layer is; with ``tta_flip``, averaged
    with those of the mirror images."""
    p = probability_columns(model.predict(x_scaled, batch_size=batch_size, verbose=0))
    if tta_flip:
        p = (p + probability_columns(model.predict(x_scaled[:, :, ::-1], batch_size=batch_size, verbose=0))) / 2
    return p
