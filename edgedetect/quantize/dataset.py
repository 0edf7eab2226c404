"""Image folders and the one preprocessing shared by training, calibration and evaluation.

The preprocessing is the daemon's for a float classifier: RGB, resized to the model's
HxW with bilinear interpolation, then x/127.5 - 1 (MobileNetV2's [-1, 1]).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from edgedetect.errors import UserError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"})


@dataclass(frozen=True, slots=True)
class LabelledFolder:
    """`root/<class>/<image>`: classes are the sub-folder names, sorted."""

    root: Path
    classes: tuple[str, ...]
    paths: tuple[Path, ...]
    labels: tuple[int, ...]


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _require_dir(root: Path, what: str) -> None:
    if not root.exists():
        raise UserError(f"{what} folder {root}: not found")
    if not root.is_dir():
        raise UserError(f"{what} folder {root}: not a directory (expected one sub-folder per class)")


def scan_labelled(root: str | Path, what: str) -> LabelledFolder:
    """A folder with one sub-folder of images per class; UserError when it is not one."""
    root = Path(root)
    _require_dir(root, what)
    class_dirs = sorted(d for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not class_dirs:
        raise UserError(f"{what} folder {root}: no class sub-folders (expected {root}/<class>/<image>.png)")
    paths: list[Path] = []
    labels: list[int] = []
    empty: list[str] = []
    for i, d in enumerate(class_dirs):
        found = _images_in(d)
        if not found:
            empty.append(d.name)
        paths += found
        labels += [i] * len(found)
    if empty:
        raise UserError(f"{what} folder {root}: no images in class sub-folder(s) {', '.join(empty)}")
    return LabelledFolder(root, tuple(d.name for d in class_dirs), tuple(paths), tuple(labels))


def scan_calibration(root: str | Path, count: int, seed: int = 0) -> list[Path]:
    """Up to `count` images from a flat folder or one with class sub-folders, a seeded sample
    so that a large folder still calibrates over every class."""
    root = Path(root)
    _require_dir(root, "calibration")
    found = _images_in(root)
    if not found:
        raise UserError(
            f"calibration folder {root}: no images found (expected {', '.join(sorted(IMAGE_SUFFIXES))} "
            "files, flat or in sub-folders)"
        )
    if len(found) > count:
        pick = np.random.default_rng(seed).choice(len(found), size=count, replace=False)
        found = [found[i] for i in sorted(pick)]
    return found


def load_rgb(path: Path, size: int) -> np.ndarray:
    """uint8 RGB [size, size, 3], resized the way the daemon resizes frames."""
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise UserError(f"{path}: cannot read image (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
    if bgr.shape[0] != size or bgr.shape[1] != size:
        bgr = cv2.resize(bgr, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_pixels(paths: list[Path] | tuple[Path, ...], size: int) -> np.ndarray:
    """uint8 [N, size, size, 3]."""
    out = np.empty((len(paths), size, size, 3), np.uint8)
    for i, p in enumerate(paths):
        out[i] = load_rgb(p, size)
    return out


def normalise(pixels: np.ndarray) -> np.ndarray:
    """uint8 RGB -> float32 in [-1, 1], MobileNetV2's input range and the daemon's default."""
    return pixels.astype(np.float32) / 127.5 - 1.0


def write_labels(path: Path, classes: tuple[str, ...] | list[str]) -> None:
    path.write_text("".join(f"{c}\n" for c in classes), encoding="utf-8")


def read_class_names(path: Path) -> list[str]:
    return [ln.strip() for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
