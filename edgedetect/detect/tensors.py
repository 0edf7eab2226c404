"""What the interpreter says about its tensors, and copies of outputs made without allocating."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np


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


def tensor_info(detail: dict[str, Any], name: str | None = None) -> TensorInfo:
    qp = detail.get("quantization_parameters") or {}
    scales = tuple(float(s) for s in np.ravel(qp.get("scales", [])))
    zps = tuple(int(z) for z in np.ravel(qp.get("zero_points", [])))
    if not scales:
        s, z = detail.get("quantization", (0.0, 0))
        scales, zps = ((float(s),), (int(z),)) if s else ((), ())
    return TensorInfo(
        index=int(detail["index"]),
        name=name or str(detail["name"]),
        shape=tuple(int(d) for d in detail["shape"]),
        dtype=np.dtype(detail["dtype"]).name,
        scales=scales,
        zero_points=zps,
    )


def signature_names(interp: Any) -> dict[int, str]:
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


def listing(tensors: list[TensorInfo]) -> str:
    return "; ".join(t.describe() for t in tensors)


class OutputBuffers:
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
                del view  # no view of the runtime's buffers may outlive this call (see preprocess)
        return self.arrays
