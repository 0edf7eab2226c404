"""A still image or a folder of images, shown one after another.

Files are read here (their bytes, then `decode.decode`), never with cv2.imread, so that:

- a file that is empty, not an image, cut short or too large is skipped with one warning that
  names it (once while the source plays it, again only if the file changes), not an OpenCV
  log line per attempt;
- a large photo is decoded reduced and kept at most `MAX_SIDE` pixels on its longest side;
- a folder is listed again at every pass of `--loop`, so files may come and go while it plays;
- a pass that finds nothing readable raises SourceError: the capture thread then backs off
  and retries, the source never spins; and `open()` raises it at once, naming the files, so a
  folder with no readable image is a one-line error at start-up, not a daemon "starting" for
  ever (and a retry names them in its one backoff line, not in a warning per file);
- `read()` returns at once when `interrupt()` is called, pacing sleep included.
"""

from __future__ import annotations

import logging
import threading
from pathlib import Path

import numpy as np

from edgedetect.errors import SourceError
from edgedetect.sources.base import Capture
from edgedetect.sources.decode import MAX_SIDE, BadImage, decode
from edgedetect.sources.pacing import Pacer

log = logging.getLogger("edgedetect.sources")

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
MAX_FILE_BYTES = 256 * 2**20  # a file larger than this is not read into memory
_NAMED_IN_ERROR = 3  # unreadable files an error line names before "and N more"


class ImageFiles:
    live = False

    def __init__(self, path: str | Path, pace: bool = True, loop: bool = False, fps: float = 1.0,
                 max_side: int = MAX_SIDE):
        self.path = Path(path)
        self.name = str(path)
        self.loop = loop
        self.pace = pace
        self.max_side = max_side
        self._fps = fps
        self._stop = threading.Event()
        self._pacer = Pacer(fps if pace else None, self._stop)
        self._files: list[Path] = []
        self._i = 0
        self._good = False  # the current pass has given a picture
        # Unreadable files of the current pass: (why, size, mtime); and what was said about each.
        self._skipped: dict[Path, tuple[str, int, int]] = {}
        self._warned: dict[Path, tuple[str, int, int]] = {}
        self._first: np.ndarray | None = None  # decoded by open(), handed out by the first read()
        # A lone image is shown again and again: decoded once while its file does not change.
        self._cache: tuple[Path, int, int, np.ndarray] | None = None

    @property
    def fps(self) -> float | None:
        return self._fps

    def _list(self) -> list[Path]:
        if self.path.is_dir():
            try:
                return sorted(p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            except OSError as e:
                raise SourceError(f"{self.path}: cannot list folder ({e.strerror})") from None
        if self.path.is_file():
            return [self.path]
        raise SourceError(f"{self.path}: image or folder not found")

    def _nothing_readable(self) -> str:
        if not self._files:
            return f"{self.path}: no images in folder (expected {', '.join(sorted(IMAGE_SUFFIXES))})"
        if not self.path.is_dir():
            return f"{self.path}: cannot decode image ({self._skipped.get(self.path, ('file gone',))[0]})"
        named = [f"{p.name}: {why[0]}" for p, why in list(self._skipped.items())[:_NAMED_IN_ERROR]]
        more = len(self._skipped) - len(named)
        if more > 0:
            named.append(f"and {more} more")
        if not named:
            named = ["its files are gone"]
        return f"{self.path}: no readable image in folder ({'; '.join(named)})"

    def open(self) -> None:
        self._files = self._list()
        self._skipped = {}
        # The first readable picture is found now, so that nothing readable is an error here
        # (the error names the files; warnings only once the source plays).
        for i, p in enumerate(self._files):
            img = self._load(p, warn=False)
            if img is not None:
                self._first, self._i, self._good = img, i + 1, True
                for q, why in self._skipped.items():
                    self._warn(q, why)
                return
        raise SourceError(self._nothing_readable())

    def _warn(self, p: Path, why: tuple[str, int, int]) -> None:
        if why[0] != "file gone" and self._warned.get(p) != why:
            self._warned[p] = why
            log.warning("%s: skipped, %s", p, why[0])

    def _skip(self, p: Path, why: tuple[str, int, int], warn: bool) -> None:
        self._skipped[p] = why
        if warn:
            self._warn(p, why)

    def _load(self, p: Path, warn: bool = True) -> np.ndarray | None:
        """The picture in file p, or None (warned once, if `warn`) when it cannot be used."""
        try:
            st = p.stat()
        except FileNotFoundError:
            self._skip(p, ("file gone", 0, 0), warn)  # deleted since the listing; the next one drops it
            return None
        except OSError as e:
            self._skip(p, (f"cannot read ({e.strerror})", 0, 0), warn)
            return None
        c = self._cache
        if c is not None and c[0] == p and c[1] == st.st_size and c[2] == st.st_mtime_ns:
            return c[3]
        if st.st_size == 0:
            reason = "empty file (0 bytes)"
        elif st.st_size > MAX_FILE_BYTES:
            reason = f"file of {st.st_size / 2**20:.0f} MB is too large (over {MAX_FILE_BYTES // 2**20} MB)"
        else:
            try:
                img = decode(p.read_bytes(), self.max_side)
            except FileNotFoundError:
                self._skip(p, ("file gone", 0, 0), warn)
                return None
            except OSError as e:
                reason = f"cannot read ({e.strerror})"
            except BadImage as e:
                reason = str(e)
            else:
                self._warned.pop(p, None)
                if len(self._files) == 1:
                    self._cache = (p, st.st_size, st.st_mtime_ns, img)
                return img
        self._skip(p, (reason, st.st_size, st.st_mtime_ns), warn)
        return None

    def read(self) -> Capture | None:
        if self._first is not None:
            img, self._first = self._first, None
            self._pacer.wait()
            return None if self._stop.is_set() else Capture(img)
        while not self._stop.is_set():
            if self._i >= len(self._files):
                if not self.loop:
                    return None
                good, skipped = self._good, self._skipped
                self._files = self._list()  # files may have come or gone
                self._i, self._good, self._skipped = 0, False, {}
                if not good:  # a whole pass without a picture: say so, and let capture back off
                    listed = set(self._files)
                    self._skipped = {p: why for p, why in skipped.items() if p in listed}
                    raise SourceError(self._nothing_readable())
                continue
            p = self._files[self._i]
            self._i += 1
            img = self._load(p)
            if img is None:
                continue
            self._good = True
            self._pacer.wait()
            return None if self._stop.is_set() else Capture(img)
        return None

    def interrupt(self) -> None:
        self._stop.set()

    def close(self) -> None:
        self._stop.set()
        self._first = self._cache = None
