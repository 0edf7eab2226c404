"""Score thresholds on raw (quantized) outputs, and class-aware non-maximum suppression.

A YOLO head gives thousands of candidate boxes a frame (8,400 x 84 values at 640x640). Nearly all
of them score below the threshold, so the threshold is applied to the raw integers first: the
smallest raw value that dequantizes to the threshold or more is found once, and only the few
candidates above it are ever converted to floats.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from edgedetect.detect.tensors import TensorInfo
from edgedetect.errors import ModelError

MAX_CANDIDATES = 3000  # before suppression, the best-scoring ones (Ultralytics caps at 30000 for 8400 anchors)


@dataclass(frozen=True, slots=True)
class Quant:
    """How one output's raw values map to real ones: real = (raw - zero_point) * scale, computed in
    float32 as everywhere here; floats when `scale` is 0."""

    dtype: str
    scale: float = 0.0
    zero_point: int = 0

    @classmethod
    def of(cls, info: TensorInfo) -> "Quant":
        if info.dtype == "float32":
            return cls("float32")
        if info.dtype not in ("uint8", "int8"):
            raise ModelError(f"output {info.describe()}: unsupported output type (expected uint8, int8 or float32)")
        if not info.quantized:
            raise ModelError(f"output {info.describe()}: integer output without quantization parameters")
        if len(info.scales) > 1:
            raise ModelError(f"output {info.describe()}: per-channel quantized output (expected one scale)")
        return cls(info.dtype, info.scale, info.zero_point)

    @property
    def quantized(self) -> bool:
        return self.scale != 0.0

    def real(self, raw: np.ndarray) -> np.ndarray:
        """Raw values as float32 (a new array)."""
        if not self.quantized:
            return np.asarray(raw, dtype=np.float32).copy()
        out = raw.astype(np.float32)
        out -= np.float32(self.zero_point)
        out *= np.float32(self.scale)
        return out

    def raw_at_least(self, threshold: float) -> int | float | None:
        """The smallest raw value whose real value is >= threshold (as `real` computes it), so that
        `raw >= raw_at_least(t)` selects exactly the values with `real(raw) >= t`. None when no raw
        value reaches the threshold. Floats pass the threshold through."""
        if not self.quantized:
            return float(threshold)
        info = np.iinfo(self.dtype)
        raws = np.arange(info.min, info.max + 1, dtype=np.int32)
        passing = raws[self.real(raws) >= np.float32(threshold)]
        return int(passing[0]) if passing.size else None

    @property
    def max_real(self) -> float:
        """The largest real value this output can hold (inf for floats)."""
        if not self.quantized:
            return float("inf")
        return float(self.real(np.array([np.iinfo(self.dtype).max]))[0])


def cap(scores: np.ndarray, limit: int = MAX_CANDIDATES) -> np.ndarray | None:
    """Indices of the `limit` best scores when there are more, else None (keep all)."""
    if scores.size <= limit:
        return None
    return np.argpartition(-scores.astype(np.float32), limit - 1)[:limit]


def xywh_to_xyxy(b: np.ndarray) -> np.ndarray:
    """[N, 4] centre x, centre y, width, height -> x1, y1, x2, y2 (a new float32 array)."""
    out = np.empty((b.shape[0], 4), np.float32)
    half_w, half_h = b[:, 2] * 0.5, b[:, 3] * 0.5
    out[:, 0] = b[:, 0] - half_w
    out[:, 1] = b[:, 1] - half_h
    out[:, 2] = b[:, 0] + half_w
    out[:, 3] = b[:, 1] + half_h
    return out


def nms(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, iou: float, limit: int) -> np.ndarray:
    """Greedy class-aware non-maximum suppression: best score first, a box is dropped when it
    overlaps a kept box of the same class by more than `iou` (intersection over union).
    Boxes are [N, 4] x1, y1, x2, y2. Returns the kept indices, best first, at most `limit`."""
    n = scores.shape[0]
    if n == 0 or limit <= 0:
        return np.empty(0, np.intp)
    order = np.argsort(-scores, kind="stable")
    b = boxes[order].astype(np.float32, copy=False)
    c = classes[order]
    x1, y1, x2, y2 = b[:, 0], b[:, 1], b[:, 2], b[:, 3]
    area = np.maximum(x2 - x1, 0) * np.maximum(y2 - y1, 0)
    alive = np.ones(n, bool)
    kept: list[int] = []
    for i in range(n):
        if not alive[i]:
            continue
        kept.append(i)
        if len(kept) >= limit:
            break
        rest = np.flatnonzero(alive[i + 1:] & (c[i + 1:] == c[i])) + (i + 1)
        if rest.size == 0:
            continue
        w = np.minimum(x2[i], x2[rest]) - np.maximum(x1[i], x1[rest])
        h = np.minimum(y2[i], y2[rest]) - np.maximum(y1[i], y1[rest])
        inter = np.maximum(w, 0) * np.maximum(h, 0)
        union = area[i] + area[rest] - inter
        overlap = np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)
        alive[rest[overlap > iou]] = False
    return order[np.asarray(kept, np.intp)]
