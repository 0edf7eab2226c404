"""What the event store puts on disk, and the rules that keep it to its own files.

    DIR/.edgedetect-store      the marker: DIR is an event store (written when the store is made)
    DIR/index.sqlite3          the index (-wal and -shm beside it while open)
    DIR/<id>/event.json        the event's figures, from which the index can be rebuilt
    DIR/<id>/snapshot.jpg      the best-scoring frame, boxes drawn
    DIR/<id>/crop.jpg          the object with some surroundings
    DIR/<id>/clip.mp4          the clip
    DIR/<id>/.NAME.tmp         one of those being written
    DIR/r<id>/review.json      a review item: the objects whose events overlap in time on one
                               camera, from which its row in the index can be rebuilt
    DIR/r<id>/clip.mp4         its clip (one per review item: no two cover the same seconds)
    DIR/r<id>/boxes.json       each object's boxes over time, drawn over the clip on playback

Users point [record] dir at a USB drive or a folder of their own, so the store claims a folder
only when it is empty or holds nothing but what the store makes, and it deletes only those exact
names, inside folders named by the event-id or review-id pattern, never through a symbolic link.
"""

from __future__ import annotations

import errno
import json
import math
import os
import re
import stat
from pathlib import Path
from typing import Any, BinaryIO, Iterable

from edgedetect.system.files import TMP_SUFFIX, write_atomic

ID_RE = re.compile(r"[0-9]{1,12}\.[0-9]{3}-[0-9]{1,9}")
REVIEW_RE = re.compile(r"r[0-9]{1,12}\.[0-9]{3}-[0-9]{1,9}")
MARKER = ".edgedetect-store"
INDEX = "index.sqlite3"
INDEX_FILES = frozenset({INDEX, f"{INDEX}-wal", f"{INDEX}-shm", f"{INDEX}-journal"})
META = "event.json"
SNAPSHOT, CROP, CLIP = "snapshot.jpg", "crop.jpg", "clip.mp4"
FILES = (SNAPSHOT, CROP, CLIP)
PROBE = ".write-probe"  # written and removed to learn whether writes work again
OWN = frozenset((META, *FILES))
TEMPORARY = frozenset(f".{n}{TMP_SUFFIX}" for n in OWN)
REVIEW_META, BOXES = "review.json", "boxes.json"
REVIEW_FILES = (CLIP, BOXES)
REVIEW_OWN = frozenset((REVIEW_META, *REVIEW_FILES))
REVIEW_TEMPORARY = frozenset(f".{n}{TMP_SUFFIX}" for n in REVIEW_OWN)
META_MAX_BYTES = 64 * 1024


class NotOurs(Exception):
    """The folder holds files the store did not make."""


def _is_dir(entry: os.DirEntry) -> bool:
    return entry.is_dir(follow_symlinks=False)


def _is_file(entry: os.DirEntry) -> bool:
    return entry.is_file(follow_symlinks=False)


def is_review(folder: str) -> bool:
    return REVIEW_RE.fullmatch(folder) is not None


def own_names(folder: str) -> frozenset[str]:
    """The names the store writes in a folder of this name (an event's or a review item's)."""
    return REVIEW_OWN | REVIEW_TEMPORARY if is_review(folder) else OWN | TEMPORARY


def _own_event_folder(entry: os.DirEntry) -> bool:
    if not (_is_dir(entry) and (ID_RE.fullmatch(entry.name) or is_review(entry.name))):
        return False
    own = own_names(entry.name)
    with os.scandir(entry.path) as inside:
        return all(_is_file(f) and f.name in own for f in inside)


def claim(root: Path) -> bool:
    """Makes `root` an event store, or checks that it is one. True if the marker was written now.
    NotOurs names what the store did not make; nothing in the folder is touched then."""
    root.mkdir(parents=True, exist_ok=True)
    marker = root / MARKER
    if marker.is_file() and not marker.is_symlink():
        return False
    with os.scandir(root) as entries:
        foreign = sorted(e.name for e in entries
                         if not ((_is_file(e) and e.name in INDEX_FILES) or _own_event_folder(e)))
    if foreign:
        shown = ", ".join(foreign[:3]) + (f" and {len(foreign) - 3} more" if len(foreign) > 3 else "")
        raise NotOurs(f"{root} holds files edgedetect did not make ({shown})")
    write_atomic(marker, b"edgedetect event store: the files beside this one are the store's\n")
    return True


def event_folders(root: Path) -> list[str]:
    """The ids of the real folders (not links) named like events."""
    with os.scandir(root) as entries:
        return [e.name for e in entries if ID_RE.fullmatch(e.name) and _is_dir(e)]


def review_folders(root: Path) -> list[str]:
    """The ids of the real folders (not links) named like review items."""
    with os.scandir(root) as entries:
        return [e.name for e in entries if is_review(e.name) and _is_dir(e)]


def _open_folder(root: Path, event_id: str) -> int:
    """A descriptor of the event's (or review item's) folder; OSError (ELOOP, ENOTDIR) if it is
    a link or no folder."""
    if not (ID_RE.fullmatch(event_id) or is_review(event_id)):
        raise FileNotFoundError(errno.ENOENT, "not an event or review id", event_id)
    return os.open(root / event_id, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def open_regular(root: Path, event_id: str, name: str) -> BinaryIO:
    """One of the event's files for reading, refusing a link anywhere below `root` and anything
    but a regular file (a FIFO would block the reader). OSError says why."""
    dfd = _open_folder(root, event_id)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK, dir_fd=dfd)
    finally:
        os.close(dfd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(errno.EINVAL, "not a regular file", f"{root / event_id / name}")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def _regular_files(dfd: int, names: Iterable[str]) -> dict[str, int]:
    """Of `names` in the folder open as `dfd`, those that are regular files (not links): name -> bytes."""
    out = {}
    for name in names:
        try:
            st = os.stat(name, dir_fd=dfd, follow_symlinks=False)
        except OSError:
            continue
        if stat.S_ISREG(st.st_mode):
            out[name] = st.st_size
    return out


def sizes(root: Path, event_id: str) -> dict[str, int]:
    """Bytes of each of the event's (or review item's) files that is there as a regular file
    (links are not counted)."""
    try:
        dfd = _open_folder(root, event_id)
    except OSError:
        return {}
    try:
        return _regular_files(dfd, REVIEW_FILES if is_review(event_id) else FILES)
    finally:
        os.close(dfd)


def remove_own(root: Path, event_id: str, names: frozenset[str] | None = None) -> int:
    """Removes the given names of the store's own (regular files only; all of them by default)
    from the event's or review item's folder, then the folder if that left it empty. Returns
    how many files went. Anything else in the folder stays, and so does the folder."""
    names = own_names(event_id) if names is None else names & own_names(event_id)
    try:
        dfd = _open_folder(root, event_id)
    except OSError:
        return 0
    try:
        found = _regular_files(dfd, names)
        for name in found:
            os.unlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)
    try:
        os.rmdir(root / event_id)
    except OSError:
        pass  # not empty: what else is in there is not the store's to delete
    return len(found)


# --- event.json ---------------------------------------------------------------------------------

META_KEYS = ("id", "seq", "label", "score", "start", "last", "end", "frames", "box", "zones", "clip_start",
             "clip_end", "camera", "review")


REVIEW_KEYS = ("id", "camera", "start", "end", "objects", "clip_start", "clip_end")


def meta_bytes(row: dict[str, Any], keys: tuple[str, ...] = META_KEYS) -> bytes:
    return json.dumps({k: row[k] for k in keys}, ensure_ascii=False, separators=(",", ":")).encode()


def _number(v: Any, optional: bool = False) -> bool:
    if v is None:
        return optional
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_meta(root: Path, event_id: str) -> dict[str, Any] | None:
    """The event's figures from its event.json, or None if it is missing, a link, too large or
    not what the store writes. An event.json without "camera" is read with camera ""."""
    raw = _read_small(root, event_id, META)
    if raw is None:
        return None
    try:
        m = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    ok = (isinstance(m, dict) and m.get("id") == event_id and isinstance(m.get("seq"), int)
          and isinstance(m.get("label"), str) and all(_number(m.get(k)) for k in ("score", "start", "last"))
          and all(_number(m.get(k), optional=True) for k in ("end", "clip_start", "clip_end"))
          and isinstance(m.get("frames"), int) and isinstance(m.get("box"), list) and len(m["box"]) in (0, 4)
          and all(_number(v) for v in m["box"]) and isinstance(m.get("zones"), list)
          and all(isinstance(z, str) for z in m["zones"]) and isinstance(m.get("camera", ""), str)
          and (m.get("review") is None or (isinstance(m["review"], str) and is_review(m["review"]))))
    if ok:
        m.setdefault("camera", "")
        m.setdefault("review", None)
    return m if ok else None


def read_review(root: Path, review_id: str) -> dict[str, Any] | None:
    """A review item's figures from its review.json, or None as read_meta."""
    raw = _read_small(root, review_id, REVIEW_META)
    if raw is None:
        return None
    try:
        m = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    ok = (isinstance(m, dict) and m.get("id") == review_id and isinstance(m.get("camera"), str)
          and _number(m.get("start")) and all(_number(m.get(k), optional=True) for k in ("end", "clip_start", "clip_end"))
          and isinstance(m.get("objects"), list) and all(isinstance(o, str) and ID_RE.fullmatch(o) for o in m["objects"]))
    return m if ok else None


def read_boxes(root: Path, review_id: str, max_bytes: int) -> bytes | None:
    """A review item's boxes.json as written (the store wrote it; it is served as it is)."""
    return _read_small(root, review_id, BOXES, max_bytes)


def _read_small(root: Path, folder: str, name: str, max_bytes: int = META_MAX_BYTES) -> bytes | None:
    try:
        with open_regular(root, folder, name) as f:
            raw = f.read(max_bytes + 1)
    except OSError:
        return None
    return raw if len(raw) <= max_bytes else None
