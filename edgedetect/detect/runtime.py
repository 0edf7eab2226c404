"""The TFLite interpreter: LiteRT (ai-edge-litert) first, tflite-runtime as a fallback."""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Any, Iterator, Sequence

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


def read_model_file(path: Path) -> bytes:
    """The model's bytes, read once. The interpreter runs from this copy in memory, so the file
    on disk may be replaced or truncated under a running daemon without harm (a memory-mapped
    file that shrinks kills the process with SIGBUS)."""
    if not path.exists():
        raise ModelError(f"{path}: model file not found")
    if not path.is_file():
        raise ModelError(f"{path}: not a file (expected a .tflite model)")
    try:
        content = path.read_bytes()
    except OSError as e:
        raise ModelError(f"{path}: cannot read model ({e.strerror})") from None
    if len(content) < 8 or content[4:8] != TFLITE_MAGIC:
        raise ModelError(f"{path}: not a TFLite model (expected a .tflite flatbuffer with identifier TFL3)")
    return content


@contextlib.contextmanager
def runtime_info_lines(notes: list[str]) -> Iterator[None]:
    """Collect the runtime's own INFO lines into `notes` instead of the terminal and the journal.

    LiteRT's C++ logger prints `INFO: Created TensorFlow Lite XNNPACK delegate for CPU.` straight
    to file descriptor 2 when an interpreter is made, under every command; no environment
    variable of ai-edge-litert 2.3 turns it off (TF_CPP_MIN_LOG_LEVEL does not). So descriptor 2
    points at a memory file for that moment; its INFO lines become notes the caller puts in its
    own line, and everything else (warnings, errors, other threads' lines) is written on."""
    sys.stderr.flush()
    saved = os.dup(2)
    capture = os.memfd_create("edgedetect-runtime-log", os.MFD_CLOEXEC)
    os.dup2(capture, 2)
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.lseek(capture, 0, os.SEEK_SET)
        with os.fdopen(capture, "rb") as f:
            text = f.read()
        for line in text.splitlines(keepends=True):
            if line.startswith(b"INFO: "):
                note = line[6:].decode(errors="replace").strip().rstrip(".")
                notes.append(note.removeprefix("Created TensorFlow Lite "))  # "XNNPACK delegate for CPU"
            else:
                os.write(2, line)


def make_interpreter(content: bytes, threads: int | None = None, delegates: Sequence[Any] = (),
                     where: str | Path = "model", notes: list[str] | None = None) -> Any:
    """The one place an interpreter is made: the model's bytes, the CPU threads, and the
    accelerator delegates (already loaded, see delegates.py). Every failure is a one-line ModelError.
    The runtime's INFO lines ("Created TensorFlow Lite XNNPACK delegate for CPU") go to `notes`."""
    from edgedetect.detect.delegates import check_runnable

    check_runnable(content, delegates, where)  # an Edge TPU model without its delegate: say so, in one line
    cls, _ = interpreter_class()
    n = threads if threads and threads > 0 else default_threads()
    try:
        with runtime_info_lines(notes if notes is not None else []):
            interp = cls(model_content=content, num_threads=n, experimental_delegates=list(delegates) or None)
            interp.allocate_tensors()
    except (ValueError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"{where}: cannot load model ({first}); the file may be truncated or corrupt") from None
    return interp


def load_interpreter(path: str | Path, threads: int | None = None, notes: list[str] | None = None) -> Any:
    """Load and allocate a .tflite file on the CPU (tools and tests)."""
    path = Path(path)
    return make_interpreter(read_model_file(path), threads, where=path, notes=notes)
