"""Lazy, guarded imports of TensorFlow, tf-keras and tensorflow-model-optimization."""

from __future__ import annotations

import os
from types import ModuleType

from edgedetect.errors import UserError

INSTALL_HINT = "pip install 'edgedetect[quantize]'"


def _quiet_env() -> None:
    # tfmot only supports Keras 2: make tf.keras resolve to tf-keras before TensorFlow loads.
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")  # TF logs CUDA probes etc. as errors; keep the CLI readable


def require_tf() -> tuple[ModuleType, ModuleType]:
    """Return (tensorflow, tf_keras); a one-line UserError naming the extra when missing."""
    _quiet_env()
    try:
        import tensorflow as tf
    except ImportError:
        raise UserError(f"TensorFlow is not installed: {INSTALL_HINT}") from None
    try:
        import tf_keras
    except ImportError:
        raise UserError(f"tf-keras is not installed: {INSTALL_HINT}") from None
    return tf, tf_keras


def require_tfmot() -> ModuleType:
    require_tf()
    try:
        import tensorflow_model_optimization as tfmot
    except ImportError:
        raise UserError(f"tensorflow-model-optimization is not installed: {INSTALL_HINT}") from None
    return tfmot


def seed_everything(seed: int) -> None:
    """Same data, same weights, same numbers on every run (CI compares against the README)."""
    tf, keras = require_tf()
    keras.utils.set_random_seed(seed)
    try:
        tf.config.experimental.enable_op_determinism()
    except (AttributeError, RuntimeError):
        pass
