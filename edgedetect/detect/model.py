"""The one interface every model family implements: `detect(frame) -> Findings`.

The worker, bench and daemon hold a `Model` and never ask which family it is. A family is a
subclass with `recognise` (does this model's output layout belong to me?) and `decode`;
families.py registers them. A call is a request and its response: what belongs to one frame (how
it was fitted into the input, what each step cost) comes back in its Findings, never stays on the
model, so frames of different sizes, or from different cameras, may follow one another freely.
Calls must not overlap: there is one interpreter, and its tensors hold the frame during a call.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, ClassVar

import numpy as np

from edgedetect import clock
from edgedetect.detect.preprocess import STRETCH, Fit, InputWriter
from edgedetect.detect.tensors import TensorInfo
from edgedetect.frames import Classification, Detection, Frame


@dataclass(frozen=True, slots=True)
class DetectFilter:
    """Which detections are kept. Labels in `allow` (when non-empty) pass; labels in `deny` never do."""

    threshold: float = 0.5
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    max_detections: int = 20
    iou: float = 0.45  # non-maximum suppression, for families that need it
    # Detections from this score up to `threshold` are kept apart as weak ones: never shown or
    # counted, they let the tracker keep a partly hidden object (ByteTrack's second stage).
    # None: none are kept.
    weak_threshold: float | None = None

    def keeps(self, label: str) -> bool:
        if self.allow and label not in self.allow:
            return False
        return label not in self.deny


@dataclass(frozen=True, slots=True)
class StageTimes:
    """What one frame spent in each step of `detect`."""

    preprocess_ms: float = 0.0  # into the input tensor
    invoke_ms: float = 0.0  # the interpreter (a result's inference_ms)
    postprocess_ms: float = 0.0  # decode: outputs to detections or classes


@dataclass(frozen=True, slots=True)
class Findings:
    """What the model made of one frame. Boxes are already mapped back to the frame through `fit`,
    which is kept for whoever needs the frame's place in the input tensor."""

    detections: tuple[Detection, ...] = ()
    classes: tuple[Classification, ...] = ()
    fit: Fit = STRETCH
    weak: tuple[Detection, ...] = ()  # under flt.threshold, down to flt.weak_threshold
    times: StageTimes = field(default=StageTimes(), compare=False)  # differ from run to run


def _pixels(frame: Frame) -> tuple[np.ndarray, bool]:
    """What the model reads of a frame, and whether it is BGR: the camera's RGB lores image when
    there is one."""
    if frame.lores is not None:
        return frame.lores, False
    return frame.image, True


@dataclass(frozen=True, slots=True)
class Loaded:
    """A model file in a running interpreter, before a family takes it on."""

    path: Path
    content: bytes  # the bytes the interpreter runs (it keeps a reference, not a copy)
    interp: Any
    inputs: list[TensorInfo]
    outputs: list[TensorInfo]
    labels: dict[int, str]
    labels_path: Path | None
    runtime_notes: tuple[str, ...] = ()  # the runtime's INFO lines ("Created ... XNNPACK delegate for CPU")


class Model(ABC):
    kind: ClassVar[str]  # "detector" or "classifier"
    family: ClassVar[str]  # the name in [model] family
    input_range: ClassVar[tuple[float, float]] = (-1.0, 1.0)  # what pixels 0..255 mean to the model
    letterbox: ClassVar[bool] = False  # the family's default fit

    def __init__(self, loaded: Loaded, layout: Any, input_range: tuple[float, float] | None = None,
                 letterbox: bool | None = None):
        self.path = loaded.path
        self.interp = loaded.interp
        self.content = loaded.content  # the bytes the interpreter runs (kept alive with it)
        self.inputs = loaded.inputs
        self.outputs = loaded.outputs
        self.labels = loaded.labels
        self.runtime_notes = loaded.runtime_notes
        self.input = loaded.inputs[0]
        self.layout = layout
        self._writer = InputWriter(self.interp, self.input, input_range or self.input_range,
                                   self.letterbox if letterbox is None else letterbox)

    @classmethod
    @abstractmethod
    def recognise(cls, outputs: list[TensorInfo]) -> Any | None:
        """The family's view of these outputs (which tensor is what), or None if not its layout."""

    @classmethod
    def file_options(cls, loaded: Loaded) -> dict[str, Any]:
        """Keyword arguments for the constructor read from the model file itself, beyond its tensors."""
        return {}

    @classmethod
    def describe_layout(cls) -> str:
        return cls.__doc__.strip().splitlines()[0] if cls.__doc__ else cls.family

    @property
    def input_size(self) -> tuple[int, int]:
        """(width, height) of the model's input."""
        return self._writer.width, self._writer.height

    @property
    def keeps_aspect(self) -> bool:
        """Frames are letterboxed into the input (their aspect kept), not stretched."""
        return self._writer.letterbox

    def detect(self, frame: Frame, flt: DetectFilter = DetectFilter(), top_k: int = 3, *,
               before_invoke: Callable[[], None] | None = None) -> Findings:
        """One frame through the model: into the input tensor, invoke, decode. `before_invoke` runs
        once the frame is in the tensor: the worker publishes the previous result there (see
        pipeline/worker.py)."""
        image, bgr = _pixels(frame)
        return self._through(image, bgr, flt, top_k, before_invoke)

    def run(self, image: np.ndarray, flt: DetectFilter = DetectFilter(), top_k: int = 3, bgr: bool = True) -> Findings:
        """One image (BGR unless told) through the model, as `detect` does a frame (tests, tools)."""
        return self._through(image, bgr, flt, top_k, None)

    def _through(self, image: np.ndarray, bgr: bool, flt: DetectFilter, top_k: int,
                 before_invoke: Callable[[], None] | None) -> Findings:
        t0 = clock.now()
        fit = self._writer.write(image, bgr)
        t1 = clock.now()
        if before_invoke is not None:
            before_invoke()
        t2 = clock.now()
        self.invoke()
        t3 = clock.now()
        low = flt.weak_threshold
        if low is None or low >= flt.threshold:
            found = self.decode(fit, flt, top_k)
            strong, weak = found.detections, ()
        else:
            # One decode at the lower score, split: NMS keeps a box only against higher-scoring
            # ones, so the strong detections are those a decode at `threshold` gives.
            found = self.decode(fit, replace(flt, threshold=low), top_k)
            strong = tuple(d for d in found.detections if d.score >= flt.threshold)
            weak = tuple(d for d in found.detections if d.score < flt.threshold)
        t4 = clock.now()
        times = StageTimes((t1 - t0) * 1000.0, (t3 - t2) * 1000.0, (t4 - t3) * 1000.0)
        return Findings(strong, found.classes, fit, weak=weak, times=times)

    # The steps of `detect`, one at a time: for bench's invoke-alone figure and for tests that write
    # the outputs themselves. Between them the interpreter's tensors hold the frame; only `detect`
    # keeps the three together.

    def prepare(self, frame: Frame) -> Fit:
        """Step 1: the frame into the input tensor; how it sits there."""
        image, bgr = _pixels(frame)
        return self._writer.write(image, bgr)

    def invoke(self) -> None:
        """Step 2: the interpreter on whatever the input tensor holds."""
        self.interp.invoke()

    @abstractmethod
    def decode(self, fit: Fit, flt: DetectFilter, top_k: int = 3) -> Findings:
        """Step 3: the outputs of the invoke just made, for a frame that sat in the input as `fit`:
        detections (boxes normalised to that frame) and/or classes."""
