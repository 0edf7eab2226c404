"""Frames into a model's input tensor: fitted (stretched or letterboxed) straight into the
tensor's buffer, colour-converted on the small image, then the model's own numeric mapping,
in NHWC or NCHW layout. Each write returns its frame's fit, so that boxes map back to that frame exactly."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edgedetect.detect.tensors import TensorInfo
from edgedetect.errors import ModelError

PAD_VALUE = 114  # the grey Ultralytics pads letterboxed images with during training


@dataclass(frozen=True, slots=True)
class Fit:
    """How a frame sits in the input tensor: tensor coordinates (normalised) map back to the
    frame's as frame = (tensor - offset) * gain, per axis."""

    gain_x: float = 1.0
    gain_y: float = 1.0
    offset_x: float = 0.0
    offset_y: float = 0.0

    def to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] boxes (xmin, ymin, xmax, ymax) normalised to the tensor -> to the frame, clipped."""
        if self.gain_x == 1.0 and self.gain_y == 1.0 and not self.offset_x and not self.offset_y:
            return np.clip(boxes, 0.0, 1.0)
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] - self.offset_x) * self.gain_x
        out[:, 1::2] = (boxes[:, 1::2] - self.offset_y) * self.gain_y
        return np.clip(out, 0.0, 1.0)


STRETCH = Fit()


def letterbox_geometry(src_w: int, src_h: int, dst_w: int, dst_h: int) -> tuple[int, int, int, int]:
    """(width, height, left, top) of a src_w x src_h image scaled to fit dst_w x dst_h, centred."""
    s = min(dst_w / src_w, dst_h / src_h)
    w, h = max(1, round(src_w * s)), max(1, round(src_h * s))
    return w, h, (dst_w - w) // 2, (dst_h - h) // 2


def image_layout(info: TensorInfo) -> tuple[int, int, bool]:
    """(height, width, channels_first) of a [1, H, W, 3] or [1, 3, H, W] image input."""
    s = info.shape
    if len(s) == 4 and s[0] == 1 and s[3] == 3:
        return s[1], s[2], False
    if len(s) == 4 and s[0] == 1 and s[1] == 3:
        return s[2], s[3], True
    raise ModelError(f"input {info.describe()}: expected one [1, height, width, 3] or [1, 3, height, width] image tensor")


class InputWriter:
    def __init__(self, interp: Any, info: TensorInfo, input_range: tuple[float, float], letterbox: bool = False):
        self.info = info
        self.height, self.width, self.channels_first = image_layout(info)
        self.letterbox = letterbox
        self._tensor = interp.tensor(info.index)
        lo, hi = input_range
        pixels = np.arange(256, dtype=np.float64)
        real = lo + pixels * (hi - lo) / 255.0
        self._float_scale = (hi - lo) / 255.0
        self._float_offset = lo
        self._lut: np.ndarray | None = None
        self._xor = False
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
            else:
                self._xor = info.dtype == "int8"  # p - 128 as int8 bits
        elif info.dtype != "float32":
            raise ModelError(f"input {info.describe()}: unsupported input type (expected uint8, int8 or float32)")
        # Pixels are staged as HWC uint8 unless they can go straight into the tensor.
        direct = info.dtype != "float32" and not self.channels_first
        self._staging = None if direct else np.empty((self.height, self.width, 3), np.uint8)
        self._scaled: np.ndarray | None = None  # letterbox: the resized image before it is placed

    def _fit_into(self, image: np.ndarray, target: np.ndarray) -> Fit:
        ih, iw = image.shape[:2]
        if not self.letterbox:
            if ih == self.height and iw == self.width:
                np.copyto(target, image)
            else:
                cv2.resize(image, (self.width, self.height), dst=target, interpolation=cv2.INTER_LINEAR)
            return STRETCH
        w, h, left, top = letterbox_geometry(iw, ih, self.width, self.height)
        if self._scaled is None or self._scaled.shape[:2] != (h, w):
            self._scaled = np.empty((h, w, 3), np.uint8)
        if (ih, iw) == (h, w):
            np.copyto(self._scaled, image)
        else:
            cv2.resize(image, (w, h), dst=self._scaled, interpolation=cv2.INTER_LINEAR)
        target[:top] = PAD_VALUE
        target[top + h:] = PAD_VALUE
        target[top:top + h, :left] = PAD_VALUE
        target[top:top + h, left + w:] = PAD_VALUE
        target[top:top + h, left:left + w] = self._scaled
        return Fit(self.width / w, self.height / h, left / self.width, top / self.height)

    def write(self, image: np.ndarray, bgr: bool) -> Fit:
        """`image` into the input tensor; how it sits there."""
        view = self._tensor()[0]
        try:
            target = self._staging if self._staging is not None else view.view(np.uint8)
            fit = self._fit_into(image, target)
            if bgr:
                cv2.cvtColor(target, cv2.COLOR_BGR2RGB, dst=target)
            if self.info.dtype == "float32":
                src = target.transpose(2, 0, 1) if self.channels_first else target
                np.multiply(src, self._float_scale, out=view, casting="unsafe")
                view += self._float_offset
                return fit
            if self._lut is not None:
                cv2.LUT(target, self._lut, dst=target)
            elif self._xor:
                np.bitwise_xor(target, 0x80, out=target)
            if self.channels_first:
                np.copyto(view.view(np.uint8), target.transpose(2, 0, 1))
            return fit
        finally:
            # The runtime refuses to invoke while numpy views of its buffers are alive.
            del view
