"""Accelerators: TFLite external delegates, loaded through the runtime's own `load_delegate`.

`[model] delegate = "edgetpu"` loads the Coral Edge TPU runtime (libedgetpu.so.1) with its device
option; any other value is the path of an external delegate library (the TFLite external delegate
ABI: `tflite_plugin_create_delegate` / `tflite_plugin_destroy_delegate`), given its options as
`key=value` strings. The delegates go to `runtime.make_interpreter`, which keeps them alive as
long as the interpreter.
"""

from __future__ import annotations

import ctypes
import re
import sys
from pathlib import Path
from typing import Any, Sequence

from edgedetect.detect.interpreter import interpreter_class
from edgedetect.errors import ModelError

EDGETPU = "edgetpu"
EDGETPU_LIBRARY = "libedgetpu.so.1"
EDGETPU_OP = b"edgetpu-custom-op"
EDGETPU_INSTALL = ("install the Edge TPU runtime with 'sudo apt install libedgetpu1-std' after adding "
                   "Coral's apt repository (https://coral.ai/docs/accelerator/get-started/)")
PLUGIN_SYMBOLS = ("tflite_plugin_create_delegate", "tflite_plugin_destroy_delegate")
_DEVICE = re.compile(r"^(usb|pci)?(:\d+)?$")


def parse_options(items: Sequence[str]) -> dict[str, str]:
    """["device=usb", ...] -> {"device": "usb", ...}; ModelError for anything else."""
    out: dict[str, str] = {}
    for item in items:
        key, sep, value = str(item).partition("=")
        if not sep or not key.strip():
            raise ModelError(f"model.delegate_options: {item!r} is not key=value (e.g. device=usb)")
        out[key.strip()] = value.strip()
    return out


def _runtime_load_delegate() -> Any:
    """`load_delegate` of the runtime whose interpreter runs the model."""

    cls, _ = interpreter_class()
    return getattr(sys.modules[cls.__module__], "load_delegate")


def _open_library(library: str, what: str) -> None:
    """dlopen the library and look for the plugin ABI before the runtime does: the runtime's Delegate
    prints an "Exception ignored" traceback from its finaliser when either is missing."""
    try:
        lib = ctypes.CDLL(library)
    except OSError as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else "cannot be opened"
        if library == EDGETPU_LIBRARY:
            raise ModelError(f"{what}: {EDGETPU_LIBRARY} not found ({reason}); {EDGETPU_INSTALL}") from None
        raise ModelError(f"{what}: cannot load the delegate library ({reason}); "
                         "check the path, or set model.delegate = \"\" to run on the CPU") from None
    missing = [sym for sym in PLUGIN_SYMBOLS if not hasattr(lib, sym)]
    if missing:
        raise ModelError(f"{what}: not a TFLite external delegate (no {', '.join(missing)} in {library})")


def load_delegate(library: str, options: dict[str, str] | None = None, what: str = "") -> Any:
    """One external delegate; a missing library or one that refuses to start is a one-line ModelError."""
    what = what or f"model.delegate {library}"
    _open_library(library, what)
    try:
        return _runtime_load_delegate()(library, options or {})
    except (OSError, ValueError, RuntimeError, AttributeError) as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        # load_delegate's message is "Failed to load delegate from X" and then the library's own words.
        reason = "; ".join(lines[1:] or lines) or type(e).__name__
        hint = (" (is the Coral plugged in, and the device option right? edgedetect doctor checks)"
                if library == EDGETPU_LIBRARY else "")
        raise ModelError(f"{what}: the delegate did not start ({reason}){hint}") from None


def load_delegates(delegate: str, option_items: Sequence[str] = ()) -> list[Any]:
    """The delegates that `[model] delegate` / `delegate_options` ask for ([] for the CPU)."""
    delegate = (delegate or "").strip()
    if not delegate:
        if option_items:
            raise ModelError("model.delegate_options are set but model.delegate is empty (CPU); "
                             "set model.delegate = \"edgetpu\" or a delegate library path")
        return []
    options = parse_options(option_items)
    if delegate == EDGETPU:
        device = options.get("device", "")
        if device and not _DEVICE.match(device):
            raise ModelError(f"model.delegate_options: device={device!r}; expected usb, usb:N, pci or pci:N")
        return [load_delegate(EDGETPU_LIBRARY, options, 'model.delegate = "edgetpu"')]
    path = Path(delegate).expanduser()
    if "/" in delegate and not path.is_file():
        raise ModelError(f"model.delegate {delegate}: delegate library not found "
                         "(expected \"edgetpu\" or the path of a TFLite external delegate .so)")
    return [load_delegate(str(path) if "/" in delegate else delegate, options)]


def custom_ops(content: bytes) -> set[bytes]:
    """The custom operator codes the model uses."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tflite_runtime import schema_py_generated as schema  # type: ignore[no-redef]
        except ImportError:
            return {EDGETPU_OP} if EDGETPU_OP in content else set()
    try:
        model = schema.Model.GetRootAsModel(content, 0)
        return {code for i in range(model.OperatorCodesLength())
                if (code := model.OperatorCodes(i).CustomCode())}
    except Exception:  # a damaged flatbuffer: the interpreter reports it in its own words
        return set()


def check_runnable(content: bytes, delegates: Sequence[Any], where: str | Path) -> None:
    """A model compiled for the Edge TPU cannot run on the CPU alone: say so in one line instead of
    the runtime's "unresolved custom op"."""
    if delegates or EDGETPU_OP not in content:
        return
    if EDGETPU_OP in custom_ops(content):
        raise ModelError(
            f"{where}: compiled for the Coral Edge TPU (it contains the edgetpu-custom-op), but no Edge TPU "
            "delegate is configured: set [model] delegate = \"edgetpu\" (needs libedgetpu1-std from Coral's apt "
            "repository, https://coral.ai/docs/accelerator/get-started/), or run the model's CPU version "
            "(the .tflite without _edgetpu)"
        )
