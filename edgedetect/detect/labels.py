"""Label files: `id name` lines (COCO style, ids may have gaps) or one label a line,
with or without a leading background line."""

from __future__ import annotations

import re
from pathlib import Path

from edgedetect.errors import ModelError

_ID_LINE = re.compile(r"^\s*(\d+)[\s:,]+(.+?)\s*$")


def read_labels(path: str | Path) -> dict[int, str]:
    """Return {class id: name}. One-label-a-line files number their lines from 0;
    `id name` files keep their ids."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ModelError(f"{path}: labels file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: cannot read labels ({e})") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    if not lines:
        raise ModelError(f"{path}: labels file is empty (expected one label a line or 'id name' lines)")
    matches = [_ID_LINE.match(ln) for ln in lines]
    if all(matches):
        return {int(m.group(1)): m.group(2) for m in matches}
    return dict(enumerate(lines))


def has_background(labels: dict[int, str]) -> bool:
    first = labels.get(0, "").strip().lower()
    return first in {"background", "???", "__background__", "unlabeled"}


def label_for(labels: dict[int, str], class_id: int) -> str:
    return labels.get(class_id, f"class {class_id}")
