"""The float Keras model: load a user's, or build a MobileNetV2 and train it; QAT fine-tuning."""

from __future__ import annotations

import socket
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgedetect.errors import UserError
from edgedetect.quantize._tf import require_tf, require_tfmot

# Sizes for which Keras publishes ImageNet MobileNetV2 weights.
IMAGENET_ALPHAS = (0.35, 0.5, 0.75, 1.0, 1.3, 1.4)
IMAGENET_SIZES = (96, 128, 160, 192, 224)


@dataclass(frozen=True, slots=True)
class TrainConfig:
    size: int = 96
    alpha: float = 0.35
    epochs: int = 15
    batch_size: int = 32
    learning_rate: float = 2e-3
    imagenet: bool = False  # try ImageNet weights for the backbone; falls back to random init
    seed: int = 0
    verbose: int = 0


def build_mobilenet_v2(num_classes: int, cfg: TrainConfig) -> Any:
    """MobileNetV2 backbone + pooled softmax head; the input is the [-1, 1] image, so the
    preprocessing stays outside the graph exactly as the daemon does it."""
    _, keras = require_tf()
    if num_classes < 2:
        raise UserError(f"need at least 2 classes to train a classifier, found {num_classes}")
    weights = _imagenet_weights(cfg) if cfg.imagenet else None
    shape = (cfg.size, cfg.size, 3)
    try:
        base = keras.applications.MobileNetV2(
            input_shape=shape, alpha=cfg.alpha, include_top=False, weights=weights, pooling="avg"
        )
    except Exception as e:  # noqa: BLE001 - a failed download is not fatal
        if weights is None:
            raise UserError(f"cannot build MobileNetV2 (alpha={cfg.alpha}, size={cfg.size}): {_first_line(e)}") from None
        print(f"ImageNet weights unavailable ({_first_line(e)}); training from scratch", file=sys.stderr)
        base = keras.applications.MobileNetV2(
            input_shape=shape, alpha=cfg.alpha, include_top=False, weights=None, pooling="avg"
        )
    # Keras' MobileNetV2 keeps BatchNorm statistics with momentum 0.999, made for ImageNet's
    # million steps; a few hundred steps on a small folder would leave them at their initial
    # values and the trained model would predict one class at inference.
    for layer in base.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = 0.9
    x = keras.layers.Dropout(0.2)(base.output)
    out = keras.layers.Dense(num_classes, activation="softmax", name="predictions")(x)
    return keras.Model(base.input, out, name=f"mobilenetv2_{cfg.alpha}_{cfg.size}")


def _imagenet_weights(cfg: TrainConfig) -> str | None:
    if cfg.alpha not in IMAGENET_ALPHAS or cfg.size not in IMAGENET_SIZES:
        print(
            f"no ImageNet weights for alpha={cfg.alpha} size={cfg.size} "
            f"(alpha in {IMAGENET_ALPHAS}, size in {IMAGENET_SIZES}); training from scratch",
            file=sys.stderr,
        )
        return None
    # An unreachable host must fail fast instead of hanging the build.
    socket.setdefaulttimeout(20)
    return "imagenet"


def train(model: Any, x: np.ndarray, y: np.ndarray, cfg: TrainConfig) -> Any:
    """Adam with cosine decay; data is already normalised to [-1, 1]."""
    tf, keras = require_tf()
    steps = max(1, int(np.ceil(len(x) / cfg.batch_size))) * cfg.epochs
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate, decay_steps=steps, alpha=0.02)
    model.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=cfg.batch_size, epochs=cfg.epochs, shuffle=True, verbose=cfg.verbose)
    return model


def quantization_aware(model: Any, x: np.ndarray, y: np.ndarray, epochs: int, cfg: TrainConfig) -> Any:
    """Wrap the trained float model with fake-quant (int8, per-channel weights) and fine-tune it
    at a low learning rate so the weights adapt to the rounding they will get."""
    _, keras = require_tf()
    tfmot = require_tfmot()
    try:
        qat = tfmot.quantization.keras.quantize_model(model)
    except Exception as e:  # noqa: BLE001 - tfmot raises bare ValueError/RuntimeError for unsupported layers
        raise UserError(f"cannot prepare {model.name} for quantization-aware training: {_first_line(e)}") from None
    steps = max(1, int(np.ceil(len(x) / cfg.batch_size))) * max(1, epochs)
    schedule = keras.optimizers.schedules.CosineDecay(cfg.learning_rate / 20, decay_steps=steps, alpha=0.1)
    qat.compile(
        optimizer=keras.optimizers.Adam(schedule),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if epochs > 0:
        qat.fit(x, y, batch_size=cfg.batch_size, epochs=epochs, shuffle=True, verbose=cfg.verbose)
    return qat


def load_keras_model(path: str | Path) -> Any:
    """A Keras model file (.keras, .h5) or a Keras SavedModel directory."""
    _, keras = require_tf()
    path = Path(path)
    if not path.exists():
        raise UserError(f"{path}: model not found (expected a .keras/.h5 file or a SavedModel directory)")
    try:
        model = keras.models.load_model(str(path), compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for unreadable files
        raise UserError(
            f"{path}: cannot load as a Keras model ({_first_line(e)}); expected a .keras/.h5 file "
            "or a SavedModel directory saved from Keras"
        ) from None
    if not hasattr(model, "inputs") or model.inputs is None:
        raise UserError(f"{path}: not a Keras model with known inputs (a plain SavedModel cannot be quantized here)")
    return model


def model_geometry(model: Any, path: Path | str = "model") -> tuple[int, int]:
    """(input size, classes) of a square-image classifier; UserError for anything else."""
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise UserError(f"{path}: expected one image input and one class output, found "
                        f"{len(model.inputs)} inputs and {len(model.outputs)} outputs")
    shape = tuple(model.inputs[0].shape)
    out = tuple(model.outputs[0].shape)
    if len(shape) != 4 or shape[3] != 3 or shape[1] is None or shape[1] != shape[2]:
        raise UserError(f"{path}: input shape {shape}: expected [batch, size, size, 3] with a fixed size")
    if len(out) != 2 or out[1] is None:
        raise UserError(f"{path}: output shape {out}: expected [batch, classes]")
    return int(shape[1]), int(out[1])


def float_accuracy(model: Any, x: np.ndarray, y: np.ndarray) -> float:
    pred = model.predict(x, batch_size=64, verbose=0)
    return float(np.mean(np.argmax(pred, axis=1) == y))


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:300] if text else type(e).__name__
