"""Every model family the daemon runs, registered in one place, and the one loader.

To add a family: write a `Model` subclass in its own module and add it to FAMILIES. With
`[model] family = "auto"` the first family whose `recognise` accepts the output tensors wins,
so more specific layouts come first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

from edgedetect.detect.classifier import Classifier
from edgedetect.detect.labels import read_labels
from edgedetect.detect.metadata import model_labels
from edgedetect.detect.model import Loaded, Model
from edgedetect.detect.runtime import make_interpreter, read_model_file
from edgedetect.detect.ssd import SsdDetector
from edgedetect.detect.tensors import listing, signature_names, tensor_info
from edgedetect.detect.yolo import YoloNms, YoloV5, YoloV8
from edgedetect.errors import ModelError

# YOLO NMS exports [1, K, 6] before YOLOv5 [1, N, 5 + C] (a one-class YOLOv5 is [1, N, 6], told apart
# by N), and YOLOv5 before YOLOv8's transposed [1, N, 4 + C] (same shape, one class more: YOLOv5 N is
# a multiple of 63, three anchors a cell).
FAMILIES: tuple[type[Model], ...] = (SsdDetector, YoloNms, YoloV5, YoloV8, Classifier)


def family_named(name: str) -> type[Model]:
    for fam in FAMILIES:
        if fam.family == name:
            return fam
    raise ModelError(f"model.family: unknown family {name!r}; expected auto or one of "
                     f"{', '.join(f.family for f in FAMILIES)}")


def load_model(path: str | Path, labels_path: str | Path | None = None, threads: int | None = None,
               input_range: Sequence[float] | None = None, *, family: str = "auto", resize: str = "auto",
               delegates: Sequence[Any] = ()) -> Model:
    """Load a model of any registered family; ModelError (one line) for anything unusable."""
    path = Path(path)
    content = read_model_file(path)
    notes: list[str] = []
    interp = make_interpreter(content, threads, delegates, where=path, notes=notes)
    inputs = [tensor_info(d) for d in interp.get_input_details()]
    sig = signature_names(interp)
    outputs = [tensor_info(d, sig.get(int(d["index"]))) for d in interp.get_output_details()]
    if len(inputs) != 1:
        raise ModelError(f"{path}: {len(inputs)} inputs found ({listing(inputs)}); expected one image input")
    labels = read_labels(labels_path) if labels_path else {}
    if not labels_path and (embedded := model_labels(content, path)) is not None:
        labels, labels_path = embedded.labels, f"{path} (its {embedded.member})"
    loaded = Loaded(path, content, interp, inputs, outputs, labels, Path(labels_path) if labels_path else None,
                    tuple(notes))
    candidates = FAMILIES if family == "auto" else (family_named(family),)
    for fam in candidates:
        layout = fam.recognise(outputs)
        if layout is None:
            continue
        kw: dict[str, Any] = fam.file_options(loaded)
        if input_range:
            kw["input_range"] = (float(input_range[0]), float(input_range[1]))
        if resize != "auto":
            kw["letterbox"] = resize == "letterbox"
        return fam(loaded, layout, **kw)
    expected = "; ".join(f"{f.family}: {f.describe_layout()}" for f in candidates)
    raise ModelError(f"{path}: unsupported outputs ({listing(outputs)}); expected {expected}")
