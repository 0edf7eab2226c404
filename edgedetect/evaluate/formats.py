"""Which format labelled pictures are in, and reading them with its reader (voc.py, yolo.py,
coco.py): the one place that knows every format."""

from __future__ import annotations

from pathlib import Path

from edgedetect.errors import UserError
from edgedetect.evaluate import coco, voc, yolo
from edgedetect.evaluate.dataset import Dataset, LabelError

FORMATS = ("voc", "yolo", "coco")


def detect_format(root: Path) -> str:
    """The one format whose label files are present below `root`."""
    if root.is_file():
        if root.suffix.lower() == ".json":
            return "coco"
        raise UserError(f"--data {root}: expected a folder of labelled pictures or a COCO .json file")
    found = [name for name, mod in (("coco", coco), ("yolo", yolo), ("voc", voc)) if mod.present(root)]
    if not found:
        raise UserError(f"--data {root}: no labels found (expected Pascal VOC .xml files beside the images or in "
                        "annotations/, YOLO .txt files with classes.txt or data.yaml, or a COCO .json file)")
    if len(found) > 1:
        raise UserError(f"--data {root}: labels in more than one format ({', '.join(found)}); choose one with --format")
    return found[0]


def read_dataset(root: str | Path, fmt: str = "auto") -> Dataset:
    """The labelled pictures at `root` (a folder, or a COCO .json file)."""
    path = Path(root).expanduser()
    if not path.exists():
        raise UserError(f"--data {path}: not found (expected a folder of labelled pictures)")
    fmt = detect_format(path) if fmt == "auto" else fmt
    if fmt not in FORMATS:
        raise UserError(f"--format: expected auto or one of {', '.join(FORMATS)}, got {fmt!r}")
    reader = {"voc": voc.read, "yolo": yolo.read, "coco": coco.read}[fmt]
    try:
        data = reader(path)
    except LabelError as e:  # the class names or the one COCO file: nothing can be scored without them
        raise UserError(str(e)) from None
    seen: dict[str, None] = dict.fromkeys(data.names)
    for s in data.samples:
        seen.update(dict.fromkeys(b.label for b in s.boxes))
    data.names = list(seen)
    if not data.samples:
        raise UserError(f"--data {path}: no picture left to score (every label file was malformed, see above)")
    return data
