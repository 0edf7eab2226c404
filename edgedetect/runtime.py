"""The TFLite interpreter: LiteRT (ai-edge-litert) first, tflite-runtime as a fallback."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from edgedetect.errors import ModelError

TFLITE_MAGIC = b"TFL3"  # flatbuffer file identifier, bytes 4..8 of every .tflite


def interpreter_class() -> tuple[type, str]:
    """Return (Interpreter class, runtime name); ModelError when neither runtime is installed."""
    try:
        from ai_edge_litert.interpreter import Interpreter

        return Interpreter, "ai-edge-litert"
    except ImportError:
        pass
    try:
        from tflite_runtime.interpreter import Interpreter

        return Interpreter, "tflite-runtime"
    except ImportError:
        raise ModelError(
            "no TFLite runtime: install ai-edge-litert (pip install ai-edge-litert) "
            "or tflite-runtime"
        ) from None


def default_threads(cores: int | None = None) -> int:
    """Interpreter threads when none are asked for: all cores but one, which is left to capture,
    drawing, encoding and the server. `edgedetect bench` measured this split best on a 2-core
    machine (pipeline 0.93 of the interpreter alone, against 0.71-0.75 with both cores on
    inference); see docs/benchmarks.md."""
    n = cores or os.cpu_count() or 1
    return max(1, n - 1)


def check_model_file(path: Path) -> None:
    """Reject files that are not TFLite flatbuffers before the runtime sees them
    (the runtime's own messages for garbage are long and sometimes crash)."""
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: not a file (expected a .tflite model)")
    try:
        with path.open("rb") as f:
            head = f.read(8)
    except OSError as e:
        raise ModelError(f"{path}: cannot read model ({e.strerror})") from None
    if len(head) < 8 or head[4:8] != TFLITE_MAGIC:
        raise ModelError(f"{path}: not a TFLite model (expected a .tflite flatbuffer with identifier TFL3)")


def load_interpreter(path: str | Path, threads: int | None = None) -> Any:
    """Load and allocate a .tflite model; every failure becomes a one-line ModelError."""
    path = Path(path)
    check_model_file(path)
    cls, _ = interpreter_class()
    n = threads if threads and threads > 0 else default_threads()
    try:
        interp = cls(model_path=str(path), num_threads=n)
        interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{path}: cannot load model ({first}); the file may be truncated or corrupt") from None
    return interp
