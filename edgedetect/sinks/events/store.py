"""The event store on disk: one folder per event and an index in SQLite (WAL).

    DIR/index.sqlite3          the index (plus -wal and -shm while open)
    DIR/<id>/snapshot.jpg      the best-scoring frame, boxes drawn
    DIR/<id>/crop.jpg          the object with some surroundings
    DIR/<id>/clip.mp4          pre_s before the start to post_s after the end

An event id is its start (wall-clock seconds, three decimals) and its number since the daemon
started, e.g. `1732712345.123-7`; ids are checked against ID_RE before they are used in a path,
and a file is served only when the index lists it.

Every file is written to a hidden temporary name in the same folder, fsync'ed and then renamed
over its final name, and the index refers to it only after the rename: a full disk, a pulled
power plug or a SIGKILL leaves at worst a temporary file (deleted at the next start), never a
half-written file that the index lists. The index runs in WAL mode with synchronous=NORMAL:
a killed daemon loses nothing it committed; a power cut may lose the last few commits, never
the index's consistency. At start, events left open by a kill are closed at their last sighting
and files the index does not know are removed.

Retention: the oldest events go first, by age (max_days) and by the bytes of the whole store
(max_mb). Nothing is written while nothing happens.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import re
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Iterator

from edgedetect import clock

log = logging.getLogger("edgedetect.sinks.events.store")

ID_RE = re.compile(r"[0-9]{1,12}\.[0-9]{3}-[0-9]{1,9}")
INDEX = "index.sqlite3"
SNAPSHOT, CROP, CLIP = "snapshot.jpg", "crop.jpg", "clip.mp4"
FILES = (SNAPSHOT, CROP, CLIP)
TMP_SUFFIX = ".tmp"
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EFBIG}

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL,
    label TEXT NOT NULL,
    score REAL NOT NULL,
    start REAL NOT NULL,
    last REAL NOT NULL,
    "end" REAL,
    frames INTEGER NOT NULL DEFAULT 0,
    box TEXT NOT NULL DEFAULT '[]',
    snapshot_bytes INTEGER NOT NULL DEFAULT 0,
    clip_bytes INTEGER NOT NULL DEFAULT 0,
    clip_start REAL,
    clip_end REAL
);
CREATE INDEX IF NOT EXISTS events_start ON events (start);
CREATE TABLE IF NOT EXISTS event_zones (
    id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    zone TEXT NOT NULL,
    PRIMARY KEY (id, zone)
) WITHOUT ROWID;
"""


class StorageFull(OSError):
    """A write failed for want of space (ENOSPC, a quota, a file size limit)."""


def is_full(e: BaseException) -> bool:
    return isinstance(e, OSError) and e.errno in FULL_ERRNOS


def _box_json(box: Iterable[float]) -> str:
    return json.dumps([round(v, 4) for v in box])


def _raise_full(e: BaseException) -> None:
    """SQLite says "database or disk is full" where the file system says ENOSPC."""
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        raise StorageFull(errno.ENOSPC, f"index: {e}") from None


def write_atomic(path: Path, data: bytes) -> None:
    """`data` as `path`, all or nothing: temporary file, fsync, rename. StorageFull when the
    disk is full (the temporary file is removed)."""
    tmp = path.with_name(f".{path.name}{TMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o640)
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


@dataclass(frozen=True, slots=True)
class Stored:
    """One event as the index has it."""

    id: str
    seq: int
    label: str
    score: float
    start: float
    last: float
    end: float | None
    frames: int
    box: list[float]
    zones: list[str]
    snapshot_bytes: int
    clip_bytes: int
    clip_start: float | None
    clip_end: float | None

    @property
    def bytes(self) -> int:
        return self.snapshot_bytes + self.clip_bytes


class EventStore:
    """Thread-safe: the events thread writes events, the recorder thread adds clips, HTTP
    threads read and delete. One connection behind one lock (every statement takes
    microseconds to a few milliseconds)."""

    def __init__(self, root: Path, max_bytes: float = float("inf"), max_age_s: float = 0.0):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.RLock()
        self.root.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.root / INDEX, check_same_thread=False, isolation_level=None, timeout=5)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute("PRAGMA foreign_keys=ON")
        self._db.executescript(SCHEMA)
        self.deleted = 0  # events removed by retention
        self.recovered = self._recover()

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # --- paths ---------------------------------------------------------------------------------

    def folder(self, event_id: str) -> Path:
        if not ID_RE.fullmatch(event_id):
            raise ValueError(f"not an event id: {event_id!r}")
        return self.root / event_id

    def clip_tmp(self, event_id: str) -> Path:
        """Where the recorder writes a clip before it is complete."""
        return self.folder(event_id) / f".{CLIP}{TMP_SUFFIX}"

    # --- writing (events thread, recorder thread) ---------------------------------------------

    def begin(self, event_id: str, seq: int, label: str, score: float, start: float, last: float,
              box: Iterable[float], zones: Iterable[str], snapshot: bytes, crop: bytes, frames: int = 0) -> None:
        """A new event: its pictures first, then its row. StorageFull leaves neither."""
        folder = self.folder(event_id)
        try:
            folder.mkdir(exist_ok=True)
            write_atomic(folder / SNAPSHOT, snapshot)
            write_atomic(folder / CROP, crop)
        except OSError:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        try:
            with self._transaction():
                self._db.execute(
                    'INSERT INTO events (id, seq, label, score, start, last, frames, box, snapshot_bytes) '
                    'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (event_id, seq, label, score, start, last, frames, _box_json(box), len(snapshot) + len(crop)))
                self._set_zones(event_id, zones)
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise

    def update(self, event_id: str, score: float, last: float, zones: Iterable[str], frames: int,
               box: Iterable[float] | None = None, snapshot: bytes | None = None, crop: bytes | None = None,
               end: float | None = None) -> bool:
        """New figures for a listed event, and better pictures if given (each replaced whole).
        False if the event is not listed (deleted meanwhile)."""
        folder = self.folder(event_id)
        with self._lock:
            if self._db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is None:
                return False
        size = None
        if snapshot is not None and crop is not None:
            write_atomic(folder / SNAPSHOT, snapshot)
            write_atomic(folder / CROP, crop)
            size = len(snapshot) + len(crop)
        with self._transaction():
            self._db.execute(
                'UPDATE events SET score = MAX(score, ?), last = ?, frames = ?, "end" = ?, '
                'box = COALESCE(?, box), snapshot_bytes = COALESCE(?, snapshot_bytes) WHERE id = ?',
                (score, last, frames, end, None if box is None else _box_json(box), size, event_id))
            self._set_zones(event_id, zones)
        return True

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction under the lock: committed whole, or rolled back, a full disk raised as StorageFull."""
        with self._lock:
            self._db.execute("BEGIN")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    self._db.execute("ROLLBACK")
                _raise_full(e)
                raise

    def _set_zones(self, event_id: str, zones: Iterable[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO event_zones (id, zone) VALUES (?, ?)",
                             [(event_id, z) for z in zones])

    def add_clip(self, event_id: str, tmp: Path, clip_start: float, clip_end: float) -> bool:
        """A finished, fsync'ed clip at `tmp` becomes the event's clip; False (and the file
        removed) if the event is gone."""
        with self._lock:
            listed = self._db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None
            if not listed:
                tmp.unlink(missing_ok=True)
                return False
            final = self.folder(event_id) / CLIP
            os.replace(tmp, final)
            self._db.execute("UPDATE events SET clip_bytes = ?, clip_start = ?, clip_end = ? WHERE id = ?",
                             (final.stat().st_size, clip_start, clip_end, event_id))
        return True

    # --- reading (HTTP threads) --------------------------------------------------------------

    def _row(self, r: sqlite3.Row, zones: list[str]) -> Stored:
        return Stored(r["id"], r["seq"], r["label"], r["score"], r["start"], r["last"], r["end"], r["frames"],
                      json.loads(r["box"]), zones, r["snapshot_bytes"], r["clip_bytes"], r["clip_start"],
                      r["clip_end"])

    def query(self, label: str | None = None, zone: str | None = None, since: float | None = None,
              until: float | None = None, limit: int = 100) -> list[Stored]:
        """Events, newest first."""
        where, args = [], []
        if label:
            where.append("label = ?")
            args.append(label)
        if zone:
            where.append("id IN (SELECT id FROM event_zones WHERE zone = ?)")
            args.append(zone)
        if since is not None:
            where.append("start >= ?")
            args.append(since)
        if until is not None:
            where.append("start < ?")
            args.append(until)
        sql = "SELECT * FROM events" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY start DESC, seq DESC LIMIT ?"
        args.append(max(0, int(limit)))
        with self._lock:
            rows = self._db.execute(sql, args).fetchall()
            zones = self._zones([r["id"] for r in rows])
        return [self._row(r, zones.get(r["id"], [])) for r in rows]

    def _zones(self, ids: list[str]) -> dict[str, list[str]]:
        out: dict[str, list[str]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._db.execute(f"SELECT id, zone FROM event_zones WHERE id IN ({marks}) ORDER BY zone", chunk):
                out.setdefault(r["id"], []).append(r["zone"])
        return out

    def get(self, event_id: str) -> Stored | None:
        if not ID_RE.fullmatch(event_id):
            return None
        with self._lock:
            r = self._db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
            if r is None:
                return None
            return self._row(r, self._zones([event_id]).get(event_id, []))

    def file(self, event_id: str, name: str) -> Path | None:
        """The path of a listed event's finished file, or None."""
        if name not in FILES:
            return None
        ev = self.get(event_id)
        if ev is None or (name == CLIP and not ev.clip_bytes) or (name != CLIP and not ev.snapshot_bytes):
            return None
        path = self.folder(event_id) / name
        return path if path.is_file() else None

    def count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    def total_bytes(self) -> int:
        """Bytes of every listed file plus the index itself."""
        with self._lock:
            files = self._db.execute("SELECT COALESCE(SUM(snapshot_bytes + clip_bytes), 0) FROM events").fetchone()[0]
        index = sum(p.stat().st_size for p in self.root.glob(INDEX + "*") if p.is_file())
        return int(files) + index

    # --- deleting ----------------------------------------------------------------------------

    def delete(self, event_id: str) -> bool:
        """Row first, then the folder: a crash in between leaves an unlisted folder, which the
        next start removes."""
        if not ID_RE.fullmatch(event_id):
            return False
        with self._lock:
            gone = self._db.execute("DELETE FROM events WHERE id = ?", (event_id,)).rowcount > 0
        if gone:
            shutil.rmtree(self.folder(event_id), ignore_errors=True)
        return gone

    def enforce(self, now_wall: float | None = None, live: Iterable[str] = ()) -> int:
        """Retention: delete the oldest events beyond max_days, then beyond max_bytes; events
        still live are kept. Returns how many were deleted."""
        now_wall = clock.wall() if now_wall is None else now_wall
        keep = set(live)
        deleted = 0
        if self.max_age_s > 0:
            with self._lock:
                old = [r[0] for r in self._db.execute("SELECT id FROM events WHERE start < ? ORDER BY start",
                                                      (now_wall - self.max_age_s,))]
            for eid in old:
                if eid not in keep and self.delete(eid):
                    deleted += 1
        if self.max_bytes != float("inf"):
            total = self.total_bytes()
            if total > self.max_bytes:
                with self._lock:
                    rows = self._db.execute("SELECT id, snapshot_bytes + clip_bytes FROM events ORDER BY start, seq"
                                            ).fetchall()
                for eid, size in rows:
                    if total <= self.max_bytes:
                        break
                    if eid in keep:
                        continue
                    if self.delete(eid):
                        deleted += 1
                        total -= size
        if deleted:
            self.deleted += deleted
            log.info("record: retention deleted %d oldest event(s); the store holds %.1f MB in %d events",
                     deleted, self.total_bytes() / 1e6, self.count())
        return deleted

    # --- start-up ----------------------------------------------------------------------------

    def _recover(self) -> dict[str, int]:
        """After an unclean stop: close open events, drop temporary and unlisted files, and
        forget pictures or clips that are missing."""
        out = {"closed": 0, "removed_files": 0, "fixed": 0}
        with self._lock:
            out["closed"] = self._db.execute('UPDATE events SET "end" = last WHERE "end" IS NULL').rowcount
            rows = {r["id"]: r for r in self._db.execute("SELECT id, snapshot_bytes, clip_bytes FROM events")}
        for entry in self.root.iterdir():
            if entry.name.startswith(INDEX):
                continue
            if entry.is_dir() and ID_RE.fullmatch(entry.name) and entry.name in rows:
                for f in entry.iterdir():
                    if f.name.endswith(TMP_SUFFIX) or f.name not in FILES:
                        f.unlink(missing_ok=True)
                        out["removed_files"] += 1
                continue
            if entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
            out["removed_files"] += 1
        with self._lock:
            for eid, r in rows.items():
                folder = self.root / eid
                snap_ok = (folder / SNAPSHOT).is_file() and (folder / CROP).is_file()
                clip_ok = (folder / CLIP).is_file()
                if r["snapshot_bytes"] and not snap_ok or r["clip_bytes"] and not clip_ok:
                    self._db.execute("UPDATE events SET snapshot_bytes = ?, clip_bytes = ? WHERE id = ?",
                                     (r["snapshot_bytes"] if snap_ok else 0, r["clip_bytes"] if clip_ok else 0, eid))
                    out["fixed"] += 1
        if any(out.values()):
            log.info("record: index %s recovered: %d open event(s) closed, %d stray file(s) removed, %d entr%s fixed",
                     self.root / INDEX, out["closed"], out["removed_files"], out["fixed"],
                     "y" if out["fixed"] == 1 else "ies")
        return out


def event_json(ev: Stored, base: str = "") -> dict[str, Any]:
    """An event as the API gives it; `snapshot`, `crop` and `clip` are URL paths on this server."""
    return {
        "id": ev.id,
        "seq": ev.seq,
        "label": ev.label,
        "score": round(ev.score, 4),
        "start": ev.start,
        "end": ev.end,
        "last_seen": ev.last,
        "duration": round((ev.end if ev.end is not None else ev.last) - ev.start, 3),
        "frames": ev.frames,
        "box": ev.box,
        "zones": ev.zones,
        "snapshot": f"{base}/events/{ev.id}/snapshot.jpg" if ev.snapshot_bytes else None,
        "crop": f"{base}/events/{ev.id}/crop.jpg" if ev.snapshot_bytes else None,
        "clip": f"{base}/events/{ev.id}/{CLIP}" if ev.clip_bytes else None,
        "clip_start": ev.clip_start,
        "clip_end": ev.clip_end,
        "bytes": ev.bytes,
    }
