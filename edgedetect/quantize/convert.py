"""The six TFLite variants of one Keras classifier.

| variant          | weights           | activations | input/output         |
|------------------|-------------------|-------------|----------------------|
| float32          | float32           | float32     | float32              |
| dynamic          | int8 (per-channel)| float32     | float32              |
| float16          | float16           | float32     | float32              |
| int8             | int8 per-channel  | int8        | --io (uint8 default) |
| int8-per-tensor  | int8 per-tensor   | int8        | --io                 |
| qat              | int8 per-channel, fake-quant trained | int8 | --io        |
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedetect.errors import UserError
from edgedetect.quantize._tf import require_tf

IO_TYPES = ("uint8", "int8", "float32")


@dataclass(frozen=True, slots=True)
class Calibration:
    """Normalised [-1, 1] images, preprocessed exactly as at inference."""

    images: np.ndarray  # float32 [N, H, W, 3]

    def dataset(self) -> Callable[[], Iterator[list[np.ndarray]]]:
        images = self.images

        def gen() -> Iterator[list[np.ndarray]]:
            for i in range(len(images)):
                yield [images[i : i + 1]]

        return gen


def _converter(model: Any) -> Any:
    tf, _ = require_tf()
    return tf.lite.TFLiteConverter.from_keras_model(model)


def _run(converter: Any, variant: str, model: Any) -> bytes:
    try:
        with warnings.catch_warnings(), _native_stderr_hidden():
            # "Statistics for quantized inputs were expected": the input range comes from calibration.
            warnings.simplefilter("ignore", UserWarning)
            return bytes(converter.convert())
    except Exception as e:  # noqa: BLE001 - the converter raises ConverterError, ValueError, RuntimeError...
        raise UserError(
            f"cannot convert {getattr(model, 'name', 'model')} to the {variant} variant: {_reason(e)}"
        ) from None


@contextlib.contextmanager
def _native_stderr_hidden() -> Iterator[None]:
    """The converter's C++ side writes pages of MLIR and progress lines straight to fd 2; what
    matters of it comes back in the exception, so the terminal keeps the one-line error."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with tempfile.TemporaryFile() as sink:
            os.dup2(sink.fileno(), 2)
            try:
                yield
            finally:
                os.dup2(saved, 2)
    finally:
        os.close(saved)


def _reason(e: BaseException) -> str:
    """The converter's own diagnosis: the text after `error:` (MLIR), else the first line."""
    text = str(e).strip()
    for line in text.splitlines():
        if "error: " in line:
            return line.rsplit("error: ", 1)[1].strip()[:300]
    return text.splitlines()[0][:300] if text else type(e).__name__


def to_float32(model: Any) -> bytes:
    return _run(_converter(model), "float32", model)


def to_dynamic(model: Any) -> bytes:
    """Optimize.DEFAULT without data: int8 weights, float activations, quantized on the fly."""
    tf, _ = require_tf()
    c = _converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    return _run(c, "dynamic", model)


def to_float16(model: Any) -> bytes:
    tf, _ = require_tf()
    c = _converter(model)
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    c.target_spec.supported_types = [tf.float16]
    return _run(c, "float16", model)


def _full_integer(c: Any, calibration: Calibration | None, io: str) -> None:
    tf, _ = require_tf()
    if io not in IO_TYPES:
        raise UserError(f"--io {io}: expected one of {', '.join(IO_TYPES)}")
    c.optimizations = [tf.lite.Optimize.DEFAULT]
    if calibration is not None:
        c.representative_dataset = calibration.dataset()
    # Builtins-int8 only: conversion fails instead of silently leaving float ops behind.
    c.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    c.inference_input_type = getattr(tf, io)
    c.inference_output_type = getattr(tf, io)


def to_int8(model: Any, calibration: Calibration, io: str = "uint8", per_channel: bool = True) -> bytes:
    """Full-integer post-training quantization calibrated on `calibration`."""
    if len(calibration.images) == 0:
        raise UserError("calibration: no images (full-integer quantization needs a representative dataset)")
    c = _converter(model)
    _full_integer(c, calibration, io)
    if not per_channel:
        # Private switches, but the only ones: one scale per weight tensor instead of one per
        # output channel; the dense layer has its own flag and stays per-channel without it.
        c._experimental_disable_per_channel = True
        c._experimental_disable_per_channel_quantization_for_dense_layers = True
    return _run(c, "int8" if per_channel else "int8-per-tensor", model)


def to_qat(qat_model: Any, calibration: Calibration | None, io: str = "uint8") -> bytes:
    """Full-integer conversion of a fake-quant model: ranges come from training; the calibration
    set only covers any op the fake-quant wrappers left out."""
    c = _converter(qat_model)
    _full_integer(c, calibration, io)
    return _run(c, "qat", qat_model)
