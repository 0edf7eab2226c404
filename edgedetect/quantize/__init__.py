"""Quantization toolkit (optional extra `edgedetect[quantize]`, never needed on the Pi).

Makes every post-training-quantization variant of one Keras classifier, plus a
quantization-aware-trained one, and measures them with the daemon's runtime.
Nothing here imports TensorFlow at import time: see `_tf.require_tf`.
"""

from __future__ import annotations

from pathlib import Path

# Order used everywhere (files, tables, plots): float baseline first, then by how much is quantized.
VARIANTS: tuple[str, ...] = ("float32", "dynamic", "float16", "int8", "int8-per-tensor", "qat")

LABELS_SUFFIX = "_labels.txt"  # int8.tflite -> int8_labels.txt, one label a line, no background line


def labels_path_for(model_path: str | Path) -> Path:
    """The labels file written next to a produced variant."""
    p = Path(model_path)
    return p.with_name(p.stem + LABELS_SUFFIX)
