"""Files written whole or not at all, the way the event store and the switches' state file
need them: a temporary name beside the file, fsync, rename."""

from __future__ import annotations

import errno
import os
from pathlib import Path

FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}
TMP_SUFFIX = ".tmp"


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
