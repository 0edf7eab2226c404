"""YOLO txt as LabelImg and Ultralytics write it: one `.txt` per image (beside it, or in `labels/`
where the images are in `images/`), a line `class cx cy w h` per object, normalised to 0..1, and
the class names in `classes.txt` (LabelImg) or the `names` of a `data.yaml` (Ultralytics)."""

from __future__ import annotations

import re
from pathlib import Path

from edgedetect.evaluate.dataset import Box, Dataset, LabelError, files_under, pair, swapped_folder

LABEL_FOLDERS = {"images": ("labels",)}
NAMES_FILE = "classes.txt"
SLACK = 1e-3  # exporters round; a coordinate a hair outside 0..1 is still meant as the edge


def names_source(root: Path) -> Path | None:
    """classes.txt nearest the top, else a .yaml at the top with a `names:` key."""
    found = files_under(root, NAMES_FILE)
    listed = sorted((p for p in found if p.name == NAMES_FILE), key=lambda p: len(p.parts))
    if listed:
        return listed[0]
    for p in sorted([*root.glob("*.yaml"), *root.glob("*.yml")]):
        try:
            if re.search(r"^names\s*:", p.read_text(encoding="utf-8", errors="replace"), re.M):
                return p
        except OSError:
            continue
    return None


def label_files(root: Path) -> list[Path]:
    return files_under(root, ".txt", skip=(NAMES_FILE,))


def present(root: Path) -> bool:
    return names_source(root) is not None and bool(label_files(root))


def _unquote(s: str) -> str:
    s = s.strip()
    return s[1:-1] if len(s) >= 2 and s[0] == s[-1] and s[0] in "'\"" else s


def _uncomment(line: str) -> str:
    return re.sub(r"\s+#.*$", "", line) if not line.lstrip().startswith("#") else ""


def yaml_names(path: Path, text: str) -> list[str]:
    """The `names` of an Ultralytics data.yaml: a [flow, list], a block list (- name) or a block
    mapping (0: name). Only this key is read, so no YAML library is needed."""
    lines = text.splitlines()
    start = next((i for i, ln in enumerate(lines) if re.match(r"names\s*:", ln)), None)
    if start is None:
        raise LabelError(path, None, "no names: key (expected the class names, as in Ultralytics' data.yaml)")
    rest = _uncomment(lines[start].split(":", 1)[1]).strip()
    if rest.startswith("["):
        flow, i = rest, start
        while "]" not in flow and i + 1 < len(lines):
            i += 1
            flow += " " + _uncomment(lines[i]).strip()
        if "]" not in flow:
            raise LabelError(path, start + 1, "names: [ without its closing ]")
        return [_unquote(x) for x in flow[1:flow.index("]")].split(",") if x.strip()]
    if rest:
        raise LabelError(path, start + 1, f"names: {rest!r}: expected a list of class names")
    items: dict[int, str] = {}
    for i in range(start + 1, len(lines)):
        ln = _uncomment(lines[i])
        if not ln.strip():
            continue
        if not ln[0].isspace():
            break
        item = ln.strip()
        if item.startswith("- "):
            items[len(items)] = _unquote(item[2:])
        elif m := re.match(r"(\d+)\s*:\s*(.+)$", item):
            items[int(m.group(1))] = _unquote(m.group(2))
        else:
            raise LabelError(path, i + 1, f"{item!r}: expected '- name' or 'id: name' under names:")
    if sorted(items) != list(range(len(items))) or not items:
        raise LabelError(path, start + 1, f"names: ids {sorted(items)}: expected names for the ids 0, 1, 2, ...")
    return [items[k] for k in range(len(items))]


def read_names(path: Path) -> list[str]:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(path, None, f"cannot read the class names ({getattr(e, 'strerror', None) or e})") from None
    if path.name == NAMES_FILE:
        names = [ln.strip() for ln in text.splitlines() if ln.strip()]
    else:
        names = yaml_names(path, text)
    if not names:
        raise LabelError(path, None, "no class names (expected one a line)")
    return names


def parse(path: Path, names: list[str], names_path: Path) -> tuple[tuple[Box, ...], None]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise LabelError(path, None, f"cannot read it ({getattr(e, 'strerror', None) or e})") from None
    boxes = []
    for n, line in enumerate(text.splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 5:
            raise LabelError(path, n, f"{len(fields)} values: expected 5 (class cx cy w h)")
        try:
            cls = int(fields[0])
        except ValueError:
            raise LabelError(path, n, f"class {fields[0]!r}: expected a whole number") from None
        if not 0 <= cls < len(names):
            raise LabelError(path, n, f"class {cls}: expected 0..{len(names) - 1} (the {len(names)} names of {names_path})")
        try:
            cx, cy, w, h = (float(v) for v in fields[1:])
        except ValueError:
            raise LabelError(path, n, f"{' '.join(fields[1:])!r}: expected four numbers (cx cy w h)") from None
        if not (w > 0 and h > 0 and -SLACK <= cx - w / 2 and cx + w / 2 <= 1 + SLACK
                and -SLACK <= cy - h / 2 and cy + h / 2 <= 1 + SLACK):
            raise LabelError(path, n, f"box {cx:g} {cy:g} {w:g} {h:g}: expected a box inside 0..1 (normalised cx cy w h)")
        boxes.append(Box(names[cls], cx - w / 2, cy - h / 2, w, h))
    return tuple(boxes), None


def candidates(image: Path, root: Path) -> list[Path]:
    return ([image.with_suffix(".txt")]
            + [p.with_suffix(".txt") for p in swapped_folder(image, root, LABEL_FOLDERS)]
            + [root / "labels" / f"{image.stem}.txt"])


def read(root: Path) -> Dataset:
    source = names_source(root)
    if source is None:
        raise LabelError(root, None, f"no {NAMES_FILE} or data.yaml with names: (expected the class names "
                                     "beside the YOLO labels)")
    names = read_names(source)
    data = pair(root, "yolo", label_files(root), lambda image: candidates(image, root),
                lambda p: parse(p, names, source), normalised=True)
    data.names = names
    return data
