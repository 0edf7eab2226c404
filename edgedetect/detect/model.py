"""The one interface every model family implements: prepare a frame, invoke, decode.

The worker, bench and daemon hold a `Model` and never ask which family it is. A family is a
subclass with `recognise` (does this model's output layout belong to me?) and `decode`;
families.py registers them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from edgedetect.detect.preprocess import Fit, InputWriter
from edgedetect.detect.tensors import TensorInfo
from edgedetect.pipeline.frames import Classification, Detection, Frame


@dataclass(frozen=True, slots=True)
class DetectFilter:
    """Which detections are kept. Labels in `allow` (when non-empty) pass; labels in `deny` never do."""

    threshold: float = 0.5
    allow: frozenset[str] = frozenset()
    deny: frozenset[str] = frozenset()
    max_detections: int = 20
    iou: float = 0.45  # non-maximum suppression, for families that need it

    def keeps(self, label: str) -> bool:
        if self.allow and label not in self.allow:
            return False
        return label not in self.deny


@dataclass(frozen=True, slots=True)
class Findings:
    detections: tuple[Detection, ...] = ()
    classes: tuple[Classification, ...] = ()


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

    @property
    def fit(self) -> Fit:
        """Where the last prepared frame sits in the input tensor."""
        return self._writer.fit

    def set_input(self, image: np.ndarray, bgr: bool = True) -> None:
        self._writer.write(image, bgr)

    def prepare(self, frame: Frame) -> None:
        """The frame into the input tensor (the camera's RGB lores image when there is one)."""
        if frame.lores is not None:
            self._writer.write(frame.lores, bgr=False)
        else:
            self._writer.write(frame.image, bgr=True)

    def invoke(self) -> None:
        self.interp.invoke()

    @abstractmethod
    def decode(self, flt: DetectFilter, top_k: int = 3) -> Findings:
        """The outputs of the last invoke, as detections (boxes normalised to the frame) and/or classes."""

    def run(self, image: np.ndarray, flt: DetectFilter = DetectFilter(), top_k: int = 3, bgr: bool = True) -> Findings:
        """One BGR image through the model, start to end (tests, tools)."""
        self.set_input(image, bgr)
        self.invoke()
        return self.decode(flt, top_k)
