"""A still image or a folder of images, shown one after another."""

from __future__ import annotations

from pathlib import Path

import cv2

from edgedetect.errors import SourceError
from edgedetect.sources.base import Capture
from edgedetect.sources.pacing import Pacer

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}


class ImageFiles:
    live = False

    def __init__(self, path: str | Path, pace: bool = True, loop: bool = False, fps: float = 1.0):
        self.path = Path(path)
        self.name = str(path)
        self.loop = loop
        self.pace = pace
        self._fps = fps
        self._pacer = Pacer(fps if pace else None)
        self._files: list[Path] = []
        self._i = 0

    @property
    def fps(self) -> float | None:
        return self._fps

    def open(self) -> None:
        if self.path.is_dir():
            self._files = sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
            if not self._files:
                raise SourceError(f"{self.path}: no images in folder (expected {', '.join(sorted(IMAGE_SUFFIXES))})")
        elif self.path.is_file():
            self._files = [self.path]
        else:
            raise SourceError(f"{self.path}: image or folder not found")
        self._i = 0

    def read(self) -> Capture | None:
        while True:
            if self._i >= len(self._files):
                if not self.loop:
                    return None
                self._i = 0
            p = self._files[self._i]
            self._i += 1
            img = cv2.imread(str(p), cv2.IMREAD_COLOR)
            if img is not None:
                self._pacer.wait()
                return Capture(img)
            if len(self._files) == 1:
                raise SourceError(f"{p}: cannot decode image")

    def interrupt(self) -> None:
        self._pacer.interrupt()

    def close(self) -> None:
        self._pacer.interrupt()
