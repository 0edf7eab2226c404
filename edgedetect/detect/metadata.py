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
import logging
import lzma
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger("edgedetect.detect")

ULTRALYTICS_MEMBERS = ("metadata.json", "temp_meta.txt")
# Real metadata zips hold one to a few members of a few KB. The header's sizes are the sender's
# word, so the bytes are counted as they inflate, across all the members read.
MAX_MEMBERS = 64
MAX_DIRECTORY_BYTES = 64 << 10
MAX_METADATA_BYTES = 1 << 20
_END_RECORD = struct.Struct("<4s4H2IH")  # end of central directory: signature ... comment length
_UNREADABLE = (zipfile.BadZipFile, OSError, ValueError, NotImplementedError, EOFError, RuntimeError,
               zlib.error, lzma.LZMAError)
_ID_LINE = re.compile(r"^\s*(\d+)[\s:,]+(.+?)\s*$")


@dataclass(frozen=True, slots=True)
class ModelLabels:
    labels: dict[int, str]
    member: str  # the zip member they came from


@dataclass(frozen=True, slots=True)
class AppendedZip:
    members: dict[str, bytes] = field(default_factory=dict)  # only those the loader reads
    inflated: int = 0  # bytes decompressed to get them
    refused: str = ""  # the limit it hit or the damage found; then members is empty


def _end_record(content: bytes) -> tuple[int, int] | None:
    """(members, central directory bytes) declared by a zip that ends the file, else None."""
    at = content.rfind(b"PK\x05\x06", max(0, len(content) - 65536 - _END_RECORD.size))
    if at < 0 or at + _END_RECORD.size > len(content):
        return None
    _, _, _, _, members, directory, _, comment = _END_RECORD.unpack_from(content, at)
    if at + _END_RECORD.size + comment != len(content):
        return None  # those four bytes belong to the model, not to a zip
    return members, directory


def _label_file(names: list[str]) -> str | None:
    """An associated label file: the .txt whose name says so, else the only .txt."""
    texts = [n for n in names if n.lower().endswith(".txt") and n not in ULTRALYTICS_MEMBERS]
    pick = [n for n in texts if "label" in n.lower()] or texts
    return pick[0] if len(pick) == 1 else None


def _too_many(members: int) -> str:
    return f"{members} members (at most {MAX_MEMBERS} are read)"


def read_appended(content: bytes) -> AppendedZip:
    """The metadata members of a zip appended to the model, inflated within MAX_METADATA_BYTES."""
    end = _end_record(content)
    if end is None:
        return AppendedZip()
    if end[0] > MAX_MEMBERS:
        return AppendedZip(refused=_too_many(end[0]))
    if end[1] > MAX_DIRECTORY_BYTES:
        return AppendedZip(refused=f"a central directory of {end[1]} bytes (at most {MAX_DIRECTORY_BYTES})")
    members: dict[str, bytes] = {}
    inflated = 0
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as z:
            infos = {i.filename: i for i in z.infolist() if not i.is_dir()}
            if len(infos) > MAX_MEMBERS:  # more entries than its end record declares
                return AppendedZip(refused=_too_many(len(infos)))
            label_file = _label_file(list(infos))
            wanted = [n for n in (*ULTRALYTICS_MEMBERS, label_file) if n in infos]
            for name in wanted:
                with z.open(infos[name]) as f:
                    data = f.read(MAX_METADATA_BYTES - inflated + 1)
                inflated += len(data)
                if inflated > MAX_METADATA_BYTES:
                    return AppendedZip({}, inflated, f"{name} inflates past the budget of {MAX_METADATA_BYTES} "
                                                     "bytes for all metadata members")
                members[name] = data
    except _UNREADABLE as e:
        return AppendedZip({}, inflated, f"unreadable ({e})")
    return AppendedZip(members, inflated)


def appended_zip(content: bytes) -> dict[str, bytes]:
    """The metadata members of a zip appended to the model; {} when there is none or it is refused."""
    return read_appended(content).members


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


def model_labels(content: bytes, where: str | Path = "model") -> ModelLabels | None:
    """The class names the model file carries, or None (with one warning when its zip is refused)."""
    appended = read_appended(content)
    if appended.refused:
        log.warning("%s: metadata zip appended to the model not read: %s; its class names are not used",
                    where, appended.refused)
    members = appended.members
    found = ultralytics_metadata(members)
    if found is not None:
        names = _names(found[0].get("names"))
        if names:
            return ModelLabels(names, found[1])
    label_file = _label_file(list(members))
    if label_file is None:
        return None
    try:
        labels = _label_lines(members[label_file].decode("utf-8"))
    except UnicodeDecodeError:
        return None
    return ModelLabels(labels, label_file) if labels else None
