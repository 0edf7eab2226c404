"""Labelled pictures as `edgedetect eval` reads them, whatever the format: which images, which
boxes, and what did not fit.

The format is found from the files or named (formats.py); VOC and YOLO pair one label file with
each image (`pair`), COCO lists the images in one file (see coco.py). A malformed label file is
one error line naming the file and line, and its image is left out (not scored as empty, which
would count its objects as misses); a label file without its image is a warning naming it; images
without a label file are pictures with no objects, said in one line with their count.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

from edgedetect.errors import UserError
from edgedetect.sources.images import IMAGE_SUFFIXES

log = logging.getLogger("edgedetect.evaluate")



@dataclass(frozen=True, slots=True)
class Box:
    """One labelled object. Pixels (x, y, width, height) unless the sample is `normalised`."""

    label: str
    x: float
    y: float
    w: float
    h: float
    crowd: bool = False  # VOC difficult, COCO iscrowd: neither found nor missed when scored
    area: float | None = None  # COCO's own area (of the outline); else the box's


@dataclass(frozen=True, slots=True)
class Sample:
    image: Path
    image_id: int
    boxes: tuple[Box, ...]
    size: tuple[int, int] | None = None  # (width, height) the labels give; None: the image's own
    normalised: bool = False  # boxes in 0..1 of the image (YOLO)


@dataclass
class Dataset:
    root: Path
    format: str
    samples: list[Sample]
    names: list[str]  # every class name the labels use, in the labels' order
    unlabelled: int = 0  # images without a label file, scored as pictures with no objects
    malformed: int = 0  # label files left out, each said in one error line
    orphans: int = 0  # label files without their image, each said in one warning
    notes: list[str] = field(default_factory=list)  # the lines said once, for the report


class LabelError(Exception):
    """A label file that cannot be read: the file, the line when known, and what was expected."""

    def __init__(self, path: Path, line: int | None, what: str):
        super().__init__(f"{path}:{line}: {what}" if line else f"{path}: {what}")


def images_under(root: Path) -> list[Path]:
    """Every image file below `root`, in a stable order; hidden folders (.git, .cache) skipped."""
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def files_under(root: Path, suffix: str, skip: Iterable[str] = ()) -> list[Path]:
    skipped = {s.lower() for s in skip}
    return sorted(p for p in root.rglob(f"*{suffix}") if p.is_file() and p.name.lower() not in skipped
                  and not any(part.startswith(".") for part in p.relative_to(root).parts))


def swapped_folder(image: Path, root: Path, names: dict[str, tuple[str, ...]]) -> list[Path]:
    """`image`'s path with the folder nearest to it that is a key of `names` (images, JPEGImages)
    replaced by each of that key's values: images/a/x.jpg -> labels/a/x.jpg."""
    parts = image.relative_to(root).parts
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] in names:
            return [root.joinpath(*parts[:i], alt, *parts[i + 1:]) for alt in names[parts[i]]]
    return []


def pair(root: Path, fmt: str, labels: list[Path], candidates: Callable[[Path], list[Path]],
         parse: Callable[[Path], tuple[tuple[Box, ...], tuple[int, int] | None]],
         normalised: bool = False) -> Dataset:
    """Images under `root` with the label file `candidates(image)` finds first, parsed."""
    images = images_under(root)
    if not images:
        raise UserError(f"{root}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} files)")
    known = set(labels)
    used: set[Path] = set()
    samples: list[Sample] = []
    unlabelled = malformed = 0
    for image_id, image in enumerate(images, start=1):
        label = next((c for c in candidates(image) if c in known and c not in used), None)
        if label is None:
            unlabelled += 1
            samples.append(Sample(image, image_id, (), None, normalised))
            continue
        used.add(label)
        try:
            boxes, size = parse(label)
        except LabelError as e:
            log.error("%s; %s left out", e, image.name)
            malformed += 1
            continue
        samples.append(Sample(image, image_id, boxes, size, normalised))
    orphans = [p for p in labels if p not in used]
    for p in orphans:
        log.warning("%s: label file without its image (expected an image of the same name beside it); ignored", p)
    data = Dataset(root, fmt, samples, [], unlabelled, malformed, len(orphans))
    if unlabelled:
        data.notes.append(f"{unlabelled} of {len(images)} images have no label file: scored as pictures with no objects")
        log.info("%s", data.notes[-1])
    return data
