"""What the event store puts on disk, and the rules that keep it to its own files.

    DIR/.edgedetect-store      the marker: DIR is an event store (written when the store is made)
    DIR/index.sqlite3          the index (-wal and -shm beside it while open)
    DIR/<id>/event.json        the event's figures, from which the index can be rebuilt
    DIR/<id>/snapshot.jpg      the best-scoring frame, boxes drawn
    DIR/<id>/crop.jpg          the object with some surroundings
    DIR/<id>/clip.mp4          the clip
    DIR/<id>/.NAME.tmp         one of those being written

Users point [record] dir at a USB drive or a folder of their own, so the store claims a folder
only when it is empty or holds nothing but what the store makes, and it deletes only those exact
names, inside folders named by the event-id pattern, never through a symbolic link.
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

ID_RE = re.compile(r"[0-9]{1,12}\.[0-9]{3}-[0-9]{1,9}")
MARKER = ".edgedetect-store"
INDEX = "index.sqlite3"
INDEX_FILES = frozenset({INDEX, f"{INDEX}-wal", f"{INDEX}-shm", f"{INDEX}-journal"})
META = "event.json"
SNAPSHOT, CROP, CLIP = "snapshot.jpg", "crop.jpg", "clip.mp4"
FILES = (SNAPSHOT, CROP, CLIP)
TMP_SUFFIX = ".tmp"
PROBE = ".write-probe"  # written and removed to learn whether writes work again
OWN = frozenset((META, *FILES))
TEMPORARY = frozenset(f".{n}{TMP_SUFFIX}" for n in OWN)
META_MAX_BYTES = 64 * 1024
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}


class NotOurs(Exception):
    """The folder holds files the store did not make."""


class StorageFull(OSError):
    """A write failed for want of space (ENOSPC, a quota, a file size limit)."""


def is_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in FULL_ERRNOS


def write_atomic(path: Path, data: bytes) -> None:
    """`data` as `path`, all or nothing: temporary file, fsync, rename. StorageFull when the
    disk is full (the temporary file is removed)."""
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o640)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        if is_full(e):
            raise StorageFull(e.errno, f"{path}: {e.strerror}") from None
        raise


def fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _is_dir(entry: os.DirEntry) -> bool:
    return entry.is_dir(follow_symlinks=False)


def _is_file(entry: os.DirEntry) -> bool:
    return entry.is_file(follow_symlinks=False)


def _own_event_folder(entry: os.DirEntry) -> bool:
    if not (_is_dir(entry) and ID_RE.fullmatch(entry.name)):
        return False
    with os.scandir(entry.path) as inside:
        return all(_is_file(f) and (f.name in OWN or f.name in TEMPORARY) for f in inside)


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


def _open_folder(root: Path, event_id: str) -> int:
    """A descriptor of the event's folder; OSError (ELOOP, ENOTDIR) if it is a link or no folder."""
    if not ID_RE.fullmatch(event_id):
        raise FileNotFoundError(errno.ENOENT, "not an event id", event_id)
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
    """Bytes of each of the event's files that is there as a regular file (links are not counted)."""
    try:
        dfd = _open_folder(root, event_id)
    except OSError:
        return {}
    try:
        return _regular_files(dfd, FILES)
    finally:
        os.close(dfd)


def remove_own(root: Path, event_id: str, names: frozenset[str] = OWN | TEMPORARY) -> int:
    """Removes the given names of the store's own (regular files only) from the event's folder,
    then the folder if that left it empty. Returns how many files went. Anything else in the
    folder stays, and so does the folder."""
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
             "clip_end", "camera")


def meta_bytes(row: dict[str, Any]) -> bytes:
    return json.dumps({k: row[k] for k in META_KEYS}, ensure_ascii=False, separators=(",", ":")).encode()


def _number(v: Any, optional: bool = False) -> bool:
    if v is None:
        return optional
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def read_meta(root: Path, event_id: str) -> dict[str, Any] | None:
    """The event's figures from its event.json, or None if it is missing, a link, too large or
    not what the store writes. An event.json without "camera" is read with camera ""."""
    try:
        with open_regular(root, event_id, META) as f:
            raw = f.read(META_MAX_BYTES + 1)
    except OSError:
        return None
    if len(raw) > META_MAX_BYTES:
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
          and all(isinstance(z, str) for z in m["zones"]) and isinstance(m.get("camera", ""), str))
    if ok:
        m.setdefault("camera", "")
    return m if ok else None
