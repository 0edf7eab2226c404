"""Which TFLite interpreter is installed: LiteRT (ai-edge-litert) first, tflite-runtime as a
fallback. Its own module, so that the runtime and the delegate loader both use it."""

from __future__ import annotations

from edgedetect.errors import ModelError


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
