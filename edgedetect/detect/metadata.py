"""Labels a model carries in its own file.

A .tflite may end with a zip archive (the flatbuffer ignores what follows it):
- Ultralytics exports put their metadata there, with the class `names`: `metadata.json` (JSON,
  8.3.x) or `temp_meta.txt` (a Python dict literal, earlier versions);
- TFLite Model Maker and the metadata writers pack the label file as an "associated file"
  (`labelmap.txt`, `labels.txt`, ...): one label a line, or `id name` lines.
"""

from __future__ import annotations

import ast
import io
import json
import re
import zipfile
from dataclasses import dataclass
from typing import Any

ULTRALYTICS_MEMBERS = ("metadata.json", "temp_meta.txt")
MAX_MEMBER_BYTES = 1 << 20  # metadata and label files are a few KB; never inflate more than this
_ID_LINE = re.compile(r"^\s*(\d+)[\s:,]+(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class ModelLabels:
    labels: dict[int, str]
    member: str  # the zip member they came from


def appended_zip(content: bytes) -> dict[str, bytes]:
    """The members of a zip appended to the model (small ones only), or {} when there is none."""
    # The end-of-central-directory record sits in the last 64 KB + 22 bytes of a zip file.
    if b"PK\x05\x06" not in content[-(65536 + 22):]:
        return {}
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            return {i.filename: z.read(i) for i in z.infolist()
                    if not i.is_dir() and i.file_size <= MAX_MEMBER_BYTES}
    except (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError):
        return {}


def _parse_dict(text: str) -> dict[str, Any] | None:
    for parse in (json.loads, ast.literal_eval):
        try:
            value = parse(text)
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _names(value: Any) -> dict[int, str] | None:
    """Ultralytics `names`: {0: 'person', ...} (keys may be strings in JSON) or a list."""
    if isinstance(value, list):
        return {i: str(v) for i, v in enumerate(value)}
    if isinstance(value, dict):
        try:
            return {int(k): str(v) for k, v in value.items()}
        except (TypeError, ValueError):
            return None
    return None


def ultralytics_metadata(members: dict[str, bytes]) -> tuple[dict[str, Any], str] | None:
    for name in ULTRALYTICS_MEMBERS:
        if name in members:
            meta = _parse_dict(members[name].decode("utf-8", "replace"))
            if meta is not None:
                return meta, name
    return None


def _label_lines(text: str) -> dict[int, str]:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    matches = [_ID_LINE.match(ln) for ln in lines]
    if lines and all(matches):
        return {int(m.group(1)): m.group(2) for m in matches if m}
    return dict(enumerate(lines))


def model_labels(content: bytes) -> ModelLabels | None:
    """The class names the model file carries, or None."""
    members = appended_zip(content)
    if not members:
        return None
    found = ultralytics_metadata(members)
    if found is not None:
        names = _names(found[0].get("names"))
        if names:
            return ModelLabels(names, found[1])
    # An associated label file: prefer a name that says so, else the only text file.
    texts = [n for n in members if n.lower().endswith(".txt") and n not in ULTRALYTICS_MEMBERS]
    labelled = [n for n in texts if "label" in n.lower()]
    pick = labelled if labelled else texts
    if len(pick) != 1:
        return None
    try:
        labels = _label_lines(members[pick[0]].decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return ModelLabels(labels, pick[0]) if labels else None


def from_ultralytics(content: bytes) -> bool:
    """The file is an Ultralytics export (whose TFLite boxes are normalised to the input)."""
    return ultralytics_metadata(appended_zip(content)) is not None
