"""A loaded TFLite model: preprocessing into the input tensor, and decoding of its outputs.

Two signatures are supported: detectors ending in the TFLite_Detection_PostProcess op
(boxes, classes, scores, count) and classifiers (one [1, N] output). Anything else is
rejected with the list of tensors found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edgedetect.errors import ModelError
from edgedetect.frames import Classification, Detection
from edgedetect.labels import has_background, label_for, read_labels
from edgedetect.runtime import load_interpreter
from edgedetect.tflite_file import postprocess_options


@dataclass(frozen=True, slots=True)
class TensorInfo:
    index: int
    name: str
    shape: tuple[int, ...]
    dtype: str
    scales: tuple[float, ...]
    zero_points: tuple[int, ...]

    @property
    def scale(self) -> float:
        return self.scales[0] if self.scales else 0.0

    @property
    def zero_point(self) -> int:
        return self.zero_points[0] if self.zero_points else 0

    @property
    def quantized(self) -> bool:
        return bool(self.scales) and self.scales[0] != 0.0

    def describe(self) -> str:
        shape = "x".join(str(d) for d in self.shape)
        if not self.quantized:
            q = "not quantized"
        elif len(self.scales) == 1:
            q = f"scale={self.scale:.6g} zero_point={self.zero_point}"
        else:
            q = f"per-channel ({len(self.scales)} scales, {min(self.scales):.3g}..{max(self.scales):.3g})"
        return f"{self.name} [{shape}] {self.dtype} {q}"


def tensor_info(detail: dict[str, Any]) -> TensorInfo:
    qp = detail.get("quantization_parameters") or {}
    scales = tuple(float(s) for s in np.ravel(qp.get("scales", [])))
    zps = tuple(int(z) for z in np.ravel(qp.get("zero_points", [])))
    if not scales:
        s, z = detail.get("quantization", (0.0, 0))
        scales, zps = ((float(s),), (int(z),)) if s else ((), ())
    return TensorInfo(
        index=int(detail["index"]),
        name=str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scales=scales,
        zero_points=zps,
    )


@dataclass(frozen=True, slots=True)
class DetectFilter:
    """Which detections are kept. Labels in `allow` (when non-empty) pass; labels in `deny` never do."""

    threshold: float = 0.5
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    max_detections: int = 20

    def keeps(self, label: str) -> bool:
        if self.allow and label not in self.allow:
            return False
        return label not in self.deny


@dataclass(slots=True)
class _Outputs:
    boxes: int
    classes: int
    scores: int
    count: int


class _InputWriter:
    """Writes a frame into the input tensor: resize straight into the tensor's buffer,
    colour conversion on the small image, then the model's own numeric mapping."""

    def __init__(self, interp: Any, info: TensorInfo, input_range: tuple[float, float]):
        if len(info.shape) != 4 or info.shape[0] != 1 or info.shape[3] != 3:
            raise ModelError(f"input {info.describe()}: expected one [1, height, width, 3] image tensor")
        self.interp = interp
        self.info = info
        self.height, self.width = info.shape[1], info.shape[2]
        self._tensor = interp.tensor(info.index)
        lo, hi = input_range
        pixels = np.arange(256, dtype=np.float64)
        real = lo + pixels * (hi - lo) / 255.0
        self._float_scale = (hi - lo) / 255.0
        self._float_offset = lo
        self._lut: np.ndarray | None = None
        self._staging: np.ndarray | None = None
        if info.dtype in ("uint8", "int8"):
            if not info.quantized:
                raise ModelError(f"input {info.describe()}: integer input without quantization parameters")
            lo_q, hi_q = (0, 255) if info.dtype == "uint8" else (-128, 127)
            q = np.clip(np.round(real / info.scale + info.zero_point), lo_q, hi_q).astype(np.int16)
            raw = pixels.astype(np.int16) - (0 if info.dtype == "uint8" else 128)
            # Within one step of the raw pixels is the same mapping up to the 127.5-vs-128
            # rounding convention; feeding raw pixels then saves a pass over the image.
            if np.abs(q - raw).max() > 1:
                self._lut = (q & 0xFF).astype(np.uint8)
        elif info.dtype == "float32":
            self._staging = np.empty((self.height, self.width, 3), np.uint8)
        else:
            raise ModelError(f"input {info.describe()}: unsupported input type (expected uint8, int8 or float32)")

    def write(self, image: np.ndarray, bgr: bool) -> None:
        view = self._tensor()[0]
        try:
            target = self._staging if self._staging is not None else view.view(np.uint8)
            if image.shape[0] == self.height and image.shape[1] == self.width:
                np.copyto(target, image)
            else:
                cv2.resize(image, (self.width, self.height), dst=target, interpolation=cv2.INTER_LINEAR)
            if bgr:
                cv2.cvtColor(target, cv2.COLOR_BGR2RGB, dst=target)
            if self._staging is not None:
                np.multiply(target, self._float_scale, out=view, casting="unsafe")
                view += self._float_offset
            elif self._lut is not None:
                cv2.LUT(target, self._lut, dst=target)
            elif self.info.dtype == "int8":
                np.bitwise_xor(target, 0x80, out=target)  # p - 128 as int8 bits
        finally:
            # The runtime refuses to invoke while numpy views of its buffers are alive.
            del view


class Model:
    """Common part of detectors and classifiers."""

    kind = "model"

    def __init__(self, path: Path, interp: Any, inputs: list[TensorInfo], outputs: list[TensorInfo],
                 labels: dict[int, str], input_range: tuple[float, float]):
        self.path = path
        self.interp = interp
        self.inputs = inputs
        self.outputs = outputs
        self.labels = labels
        self.input = inputs[0]
        self._writer = _InputWriter(interp, self.input, input_range)

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model's input."""
        return self._writer.width, self._writer.height

    def set_input(self, image: np.ndarray, bgr: bool = True) -> None:
        self._writer.write(image, bgr)

    def invoke(self) -> None:
        self.interp.invoke()


class _OutputBuffers:
    """Output tensors copied into arrays made once, instead of `get_tensor`'s fresh copy of
    each output per frame."""

    def __init__(self, interp: Any, infos: list[TensorInfo]):
        self._getters = [interp.tensor(t.index) for t in infos]
        self.arrays = [np.empty(t.shape, np.dtype(t.dtype)) for t in infos]

    def read(self) -> list[np.ndarray]:
        for get, buf in zip(self._getters, self.arrays):
            view = get()
            try:
                np.copyto(buf, view)
            finally:
                del view  # no view of the runtime's buffers may outlive this call (see _InputWriter)
        return self.arrays


class Detector(Model):
    kind = "detector"

    def __init__(self, *args: Any, outputs_map: _Outputs, num_classes: int | None = None, **kw: Any):
        super().__init__(*args, **kw)
        self.num_classes = num_classes
        self._label_offset = 1 if has_background(self.labels) else 0
        if self.labels and num_classes:
            covered = max(self.labels) + 1 - self._label_offset
            if covered < num_classes:
                raise ModelError(
                    f"labels: ids up to {covered - 1} for a detector with {num_classes} classes "
                    f"(expected labels for class ids 0..{num_classes - 1})"
                )
        by_index = {t.index: t for t in self.outputs}
        order = (outputs_map.count, outputs_map.scores, outputs_map.boxes, outputs_map.classes)
        self._buffers = _OutputBuffers(self.interp, [by_index[i] for i in order])

    def detections(self, flt: DetectFilter) -> list[Detection]:
        count_a, scores_a, boxes_a, classes_a = self._buffers.read()
        count = int(count_a.reshape(-1)[0])
        scores = scores_a[0][:count]
        keep = np.flatnonzero(scores >= flt.threshold)
        if keep.size == 0:
            return []
        keep = keep[np.argsort(-scores[keep], kind="stable")]
        boxes = boxes_a[0]
        classes = classes_a[0]
        found: list[Detection] = []
        for i in keep:
            class_id = int(classes[i])
            label = label_for(self.labels, class_id + self._label_offset)
            if not flt.keeps(label):
                continue
            ymin, xmin, ymax, xmax = np.clip(boxes[i], 0.0, 1.0).tolist()
            found.append(Detection(class_id, label, float(scores[i]), (xmin, ymin, xmax, ymax)))
            if len(found) >= flt.max_detections:
                break
        return found


class Classifier(Model):
    kind = "classifier"

    def __init__(self, *args: Any, **kw: Any):
        super().__init__(*args, **kw)
        self.output = self.outputs[0]
        self._buffers = _OutputBuffers(self.interp, [self.output])
        n = int(np.prod(self.output.shape))
        if len(self.labels) == n:
            self._label_offset = 0
        elif len(self.labels) == n - 1:
            self._label_offset = -1  # the file left out the background class 0
        else:
            raise ModelError(
                f"labels: {len(self.labels)} labels for a classifier with {n} classes "
                f"(expected {n}, or {n - 1} without a background line)"
            )

    def top(self, k: int = 5, threshold: float = 0.0) -> list[Classification]:
        raw = self._buffers.read()[0].reshape(-1)
        if self.output.quantized:
            scores = (raw.astype(np.float32) - self.output.zero_point) * self.output.scale
        else:
            scores = raw.astype(np.float32)
        k = min(k, scores.size)
        idx = np.argpartition(-scores, k - 1)[:k]
        idx = idx[np.argsort(-scores[idx], kind="stable")]
        out = []
        for i in idx:
            if scores[i] < threshold:
                break
            j = int(i) + self._label_offset
            label = label_for(self.labels, j) if j >= 0 else "background"
            out.append(Classification(int(i), label, float(scores[i])))
        return out


def _detection_outputs(outputs: list[TensorInfo]) -> _Outputs | None:
    """Find boxes/classes/scores/count of a TFLite_Detection_PostProcess model by name and shape.
    TF1 exports name them `...PostProcess`, `:1`, `:2`, `:3`; TF2 exports name them by signature
    keys (`detection_boxes` ...) or `StatefulPartitionedCall:N` in another order, so position
    alone is never trusted."""
    if len(outputs) != 4:
        return None
    boxes = [t for t in outputs if len(t.shape) == 3 and t.shape[-1] == 4]
    count = [t for t in outputs if int(np.prod(t.shape)) == 1]
    pairs = [t for t in outputs if len(t.shape) == 2 and t not in boxes]
    if len(boxes) != 1 or len(count) != 1 or len(pairs) != 2:
        return None
    n = boxes[0].shape[1]
    if any(t.shape[1] != n for t in pairs):
        return None

    def pick(words: tuple[str, ...], suffix: str) -> list[TensorInfo]:
        by_word = [t for t in pairs if any(w in t.name.lower() for w in words)]
        if len(by_word) == 1:
            return by_word
        return [t for t in pairs if "postprocess" in t.name.lower() and t.name.endswith(suffix)]

    classes, scores = pick(("class",), ":1"), pick(("score",), ":2")
    if len(classes) != 1 or len(scores) != 1 or classes[0] is scores[0]:
        return None
    return _Outputs(boxes[0].index, classes[0].index, scores[0].index, count[0].index)


def _signature_names(interp: Any) -> dict[int, str]:
    """Tensor index -> signature output key (TF2 exports carry `detection_boxes` etc. there)."""
    names: dict[int, str] = {}
    try:
        sigs = interp.get_signature_list()
    except (AttributeError, ValueError):
        return names
    for key in sigs:
        try:
            runner_outputs = interp._get_full_signature_list()[key]["outputs"]
        except (AttributeError, KeyError, TypeError):
            continue
        for out_key, index in runner_outputs.items():
            names[int(index)] = out_key
    return names


def load_model(path: str | Path, labels_path: str | Path | None = None, threads: int | None = None,
               input_range: tuple[float, float] = (-1.0, 1.0)) -> Detector | Classifier:
    """Load a detector or classifier; ModelError (one line) for anything unusable."""
    path = Path(path)
    interp = load_interpreter(path, threads)
    inputs = [tensor_info(d) for d in interp.get_input_details()]
    sig = _signature_names(interp)
    outputs = []
    for d in interp.get_output_details():
        t = tensor_info(d)
        if t.index in sig:
            t = TensorInfo(t.index, sig[t.index], t.shape, t.dtype, t.scales, t.zero_points)
        outputs.append(t)
    if len(inputs) != 1:
        raise ModelError(f"{path}: {len(inputs)} inputs found ({_listing(inputs)}); expected one image input")
    labels = read_labels(labels_path) if labels_path else {}
    mapped = _detection_outputs(outputs)
    if mapped is not None:
        options = postprocess_options(path) or {}
        num_classes = options.get("num_classes")
        try:
            return Detector(path, interp, inputs, outputs, labels, input_range, outputs_map=mapped,
                            num_classes=int(num_classes) if num_classes else None)
        except ModelError as e:
            raise ModelError(f"{labels_path}: {str(e).removeprefix('labels: ')}") from None
    if len(outputs) == 1 and len(outputs[0].shape) == 2 and outputs[0].shape[0] == 1:
        if not labels:
            labels = {i: f"class {i}" for i in range(outputs[0].shape[1])}
        try:
            return Classifier(path, interp, inputs, outputs, labels, input_range)
        except ModelError as e:
            raise ModelError(f"{labels_path}: {str(e).removeprefix('labels: ')}") from None
    raise ModelError(
        f"{path}: unsupported outputs ({_listing(outputs)}); expected a detector with "
        "TFLite_Detection_PostProcess outputs (boxes [1,N,4], classes [1,N], scores [1,N], count [1]) "
        "or a classifier with one [1, classes] output"
    )


def _listing(tensors: list[TensorInfo]) -> str:
    return "; ".join(t.describe() for t in tensors)


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

    def lines(self) -> list[str]:
        out = [
            f"path: {self.path}",
            f"size: {self.size_bytes / 1e6:.2f} MB",
            f"kind: {self.kind}",
            f"runtime: {self.runtime}",
        ]
        out += [f"input:  {t.describe()}" for t in self.inputs]
        out += [f"output: {t.describe()}" for t in self.outputs]
        out.append(f"quantized tensors: {self.quantized_weights} ({self.per_channel_weights} per-channel)")
        if self.error:
            out.append(f"error: {self.error}")
        return out


def describe_model(path: str | Path) -> ModelDescription:
    """Everything `models info` prints: tensors, dtypes, quantization, size."""
    from edgedetect.runtime import interpreter_class

    path = Path(path)
    kind, error = "unsupported", ""
    try:
        model = load_model(path, None, 1)
        interp, kind = model.interp, model.kind
    except ModelError as e:
        error = str(e)
        interp = load_interpreter(path, 1)  # still list the tensors of a model it cannot use
    _, runtime = interpreter_class()
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
                            len(quantized), sum(1 for t in quantized if len(t.scales) > 1), error)
