"""What `models info` prints: tensors, dtypes, quantization, size, and the family recognised."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from edgedetect.detect.families import load_model
from edgedetect.detect.interpreter import interpreter_class
from edgedetect.detect.runtime import load_interpreter
from edgedetect.detect.tensors import TensorInfo, tensor_info
from edgedetect.errors import ModelError


@dataclass(slots=True)
class ModelDescription:
    path: Path
    size_bytes: int
    kind: str
    runtime: str
    inputs: list[TensorInfo] = field(default_factory=list)
    outputs: list[TensorInfo] = field(default_factory=list)
    quantized_weights: int = 0
    per_channel_weights: int = 0
    error: str = ""
    family: str = ""

    def lines(self) -> list[str]:
        out = [
            f"path: {self.path}",
            f"size: {self.size_bytes / 1e6:.2f} MB",
            f"kind: {self.kind}" + (f" ({self.family})" if self.family else ""),
            f"runtime: {self.runtime}",
        ]
        out += [f"input:  {t.describe()}" for t in self.inputs]
        out += [f"output: {t.describe()}" for t in self.outputs]
        out.append(f"quantized tensors: {self.quantized_weights} ({self.per_channel_weights} per-channel)")
        if self.error:
            out.append(f"error: {self.error}")
        return out


def describe_model(path: str | Path) -> ModelDescription:
    path = Path(path)
    kind, family, error = "unsupported", "", ""
    notes: list[str] = []
    try:
        model = load_model(path, None, 1)
        interp, kind, family, notes = model.interp, model.kind, model.family, list(model.runtime_notes)
    except ModelError as e:
        error = str(e)
        interp = load_interpreter(path, 1, notes)  # still list the tensors of a model it cannot use
    _, runtime = interpreter_class()
    runtime += "".join(f", {note}" for note in notes)
    inputs = [tensor_info(d) for d in interp.get_input_details()]
    outputs = [tensor_info(d) for d in interp.get_output_details()]
    details = []
    for d in interp.get_tensor_details():
        try:
            details.append(tensor_info(d))
        except (KeyError, TypeError, ValueError):
            continue
    quantized = [t for t in details if t.quantized]
    return ModelDescription(path, path.stat().st_size, kind, runtime, inputs, outputs,
                            len(quantized), sum(1 for t in quantized if len(t.scales) > 1), error, family)
