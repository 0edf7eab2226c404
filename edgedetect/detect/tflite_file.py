"""Facts read from a .tflite flatbuffer itself, which the interpreter API does not expose."""

from __future__ import annotations

from pathlib import Path
from typing import Any

POSTPROCESS_OP = b"TFLite_Detection_PostProcess"


def postprocess_options(model: bytes | str | Path) -> dict[str, Any] | None:
    """The custom options of the detection post-process op (num_classes, max_detections, ...),
    or None if the model has no such op or the schema module is unavailable."""
    try:
        from ai_edge_litert import schema_py_generated as schema
    except ImportError:
        try:
            from tflite_runtime import schema_py_generated as schema  # type: ignore[no-redef]
        except ImportError:
            return None
    from flatbuffers import flexbuffers

    buf = model if isinstance(model, bytes) else Path(model).read_bytes()
    model = schema.Model.GetRootAsModel(buf, 0)
    codes = [model.OperatorCodes(i).CustomCode() for i in range(model.OperatorCodesLength())]
    for g in range(model.SubgraphsLength()):
        graph = model.Subgraphs(g)
        for o in range(graph.OperatorsLength()):
            op = graph.Operators(o)
            if codes[op.OpcodeIndex()] == POSTPROCESS_OP:
                raw = op.CustomOptionsAsNumpy()
                return dict(flexbuffers.Loads(bytes(raw))) if not isinstance(raw, int) else {}
    return None
