"""The event store: one folder per event (see ondisk.py for what is on disk) and an index in
SQLite (WAL).

An event id is its start (wall-clock seconds, three decimals) and its number since the daemon
started, e.g. `1732712345.123-7`; ids are checked against ID_RE before they are used in a path,
and a file is served only when the index lists it, opened without following links.

Every file is written to a hidden temporary name in the same folder, fsync'ed and then renamed
over its final name, and the index refers to it only after the rename: a full disk, a pulled
power plug or a SIGKILL leaves at worst a temporary file (deleted at the next start), never a
half-written file that the index lists. The index runs in WAL mode with synchronous=NORMAL:
a killed daemon loses nothing it committed; a power cut may lose the last few commits, never
the index's consistency. At start, events left open by a kill are closed at their last sighting.

Each event folder holds event.json, the event's row as the index has it, rewritten after each
change: an index that SQLite finds damaged (at start or in use) is moved aside as
index.sqlite3.corrupt-TIME and a new one is built from the folders, so a damaged index loses
no event and never stops the daemon.

Retention: the oldest events go first, by age (max_days) and by the bytes of the whole store
(max_mb). Nothing is written while nothing happens.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import json
import logging
import os
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, Iterator

from edgedetect import clock
from edgedetect.storage import ondisk
from edgedetect.storage.ondisk import (CLIP, CROP, FILES, ID_RE, INDEX, INDEX_FILES, META, SNAPSHOT,
                                            TEMPORARY, TMP_SUFFIX, StorageFull, write_atomic)

log = logging.getLogger("edgedetect.storage.store")

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
    clip_end REAL,
    camera TEXT NOT NULL DEFAULT ''
);
CREATE INDEX IF NOT EXISTS events_start ON events (start);
CREATE TABLE IF NOT EXISTS event_zones (
    id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    zone TEXT NOT NULL,
    PRIMARY KEY (id, zone)
) WITHOUT ROWID;
"""
# Columns added, with ALTER TABLE, to an index that lacks them when it is opened.
ADDED_COLUMNS = (("camera", "TEXT NOT NULL DEFAULT ''"),)
CORRUPT_CODES = {11, 26}  # SQLITE_CORRUPT, SQLITE_NOTADB (primary codes)


def is_corrupt(e: BaseException) -> bool:
    return isinstance(e, sqlite3.DatabaseError) and (getattr(e, "sqlite_errorcode", 0) & 0xFF) in CORRUPT_CODES


class IndexCorrupt(sqlite3.DatabaseError):
    """SQLite found the index damaged; it has been moved aside and rebuilt from the folders."""


def _once_more_if_rebuilt(method: Callable[..., Any]) -> Callable[..., Any]:
    """A read that found the index damaged is answered from the rebuilt one."""
    @functools.wraps(method)
    def read(self: "EventStore", *args: Any, **kwargs: Any) -> Any:
        try:
            return method(self, *args, **kwargs)
        except IndexCorrupt:
            return method(self, *args, **kwargs)
    return read


def _box_json(box: Iterable[float]) -> str:
    return json.dumps([round(v, 4) for v in box])


def _raise_full(e: BaseException) -> None:
    """SQLite says "database or disk is full" where the file system says ENOSPC."""
    if isinstance(e, sqlite3.OperationalError) and "full" in str(e):
        raise StorageFull(errno.ENOSPC, f"index: {e}") from None


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
    camera: str = ""  # the camera that saw it ("" when its event.json names none)

    @property
    def bytes(self) -> int:
        return self.snapshot_bytes + self.clip_bytes


class EventStore:
    """Thread-safe: the events thread writes events, the recorder thread adds clips, HTTP
    threads read and delete. One connection behind one lock (every statement takes
    microseconds to a few milliseconds).

    Raises ondisk.NotOurs when `root` holds files the store did not make, OSError or
    sqlite3.Error when the folder cannot be used; a damaged index is not an error (see above)."""

    def __init__(self, root: Path, max_bytes: float = float("inf"), max_age_s: float = 0.0):
        self.root = Path(root)
        self.max_bytes = max_bytes
        self.max_age_s = max_age_s
        self._lock = threading.RLock()
        self._refused: set[str] = set()  # files refused as links, warned about once each
        self.deleted = 0  # events removed by retention
        self.rebuilt = 0  # damaged indexes moved aside
        ondisk.claim(self.root)
        self._db = self._open_index()
        self.recovered = self._recover()

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(self.root / INDEX, check_same_thread=False, isolation_level=None, timeout=5)
        try:
            db.row_factory = sqlite3.Row
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("PRAGMA foreign_keys=ON")
            db.executescript(SCHEMA)
            have = {r["name"] for r in db.execute("PRAGMA table_info(events)")}
            for column, declaration in ADDED_COLUMNS:
                if column not in have:
                    db.execute(f"ALTER TABLE events ADD COLUMN {column} {declaration}")
            problem = db.execute("PRAGMA quick_check(1)").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"quick_check: {' '.join(problem.split())}")
        except BaseException:
            db.close()
            raise
        return db

    def _open_index(self) -> sqlite3.Connection:
        try:
            return self._connect()
        except sqlite3.DatabaseError as e:
            if not (is_corrupt(e) or str(e).startswith("quick_check")):
                raise
            self._move_aside(e)
            return self._connect()

    def _move_aside(self, e: BaseException) -> None:
        stamp = time.strftime("%Y%m%dT%H%M%S", time.localtime(clock.wall()))
        moved = self.root / f"{INDEX}.corrupt-{stamp}"
        for name in sorted(INDEX_FILES):
            src = self.root / name
            if src.is_file():
                os.replace(src, self.root / f"{moved.name}{name[len(INDEX):]}")
        self.rebuilt += 1
        log.warning("record: the index %s is damaged (%s); moved aside as %s, rebuilding it from the event "
                    "folders", self.root / INDEX, e, moved.name)

    def _rebuild(self, e: BaseException) -> None:
        """In use: the damaged index aside, a new one from the folders (under the lock)."""
        with contextlib.suppress(sqlite3.Error):
            self._db.close()
        self._move_aside(e)
        self._db = self._connect()
        self._recover()

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
              box: Iterable[float], zones: Iterable[str], snapshot: bytes, crop: bytes, frames: int = 0,
              camera: str = "") -> None:
        """A new event: its pictures first, then its event.json, then its row. A failure leaves
        none of them; if the index is found damaged meanwhile, the rebuilt index lists the event."""
        folder = self.folder(event_id)
        box, zones = [round(v, 4) for v in box], sorted(set(zones))
        row = {"id": event_id, "seq": seq, "label": label, "score": score, "start": start, "last": last,
               "end": None, "frames": frames, "box": box, "zones": zones, "clip_start": None, "clip_end": None,
               "camera": camera}
        try:
            folder.mkdir(exist_ok=True)
            write_atomic(folder / SNAPSHOT, snapshot)
            write_atomic(folder / CROP, crop)
            write_atomic(folder / META, ondisk.meta_bytes(row))

            def insert() -> None:
                self._db.execute(
                    'INSERT OR REPLACE INTO events (id, seq, label, score, start, last, frames, box, snapshot_bytes, '
                    'camera) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (event_id, seq, label, score, start, last, frames, _box_json(box), len(snapshot) + len(crop),
                     camera))
                self._set_zones(event_id, zones)

            self._commit(insert)
        except BaseException:
            ondisk.remove_own(self.root, event_id)
            raise

    def update(self, event_id: str, score: float, last: float, zones: Iterable[str], frames: int,
               box: Iterable[float] | None = None, snapshot: bytes | None = None, crop: bytes | None = None,
               end: float | None = None) -> bool:
        """New figures for a listed event, and better pictures if given (each replaced whole).
        False if the event is not listed (deleted meanwhile)."""
        folder = self.folder(event_id)
        if not self._listed(event_id):
            return False
        size = None
        if snapshot is not None and crop is not None:
            write_atomic(folder / SNAPSHOT, snapshot)
            write_atomic(folder / CROP, crop)
            size = len(snapshot) + len(crop)

        def change() -> None:
            self._db.execute(
                'UPDATE events SET score = MAX(score, ?), last = ?, frames = ?, "end" = ?, '
                'box = COALESCE(?, box), snapshot_bytes = COALESCE(?, snapshot_bytes) WHERE id = ?',
                (score, last, frames, end, None if box is None else _box_json(box), size, event_id))
            self._set_zones(event_id, zones)
            self._write_meta(event_id)

        self._commit(change)
        return True

    def _commit(self, body: Callable[[], None]) -> None:
        """`body` in one transaction; once more on the rebuilt index if SQLite found the index damaged."""
        try:
            with self._transaction():
                body()
        except IndexCorrupt:
            with self._transaction():
                body()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        """One write transaction under the lock: committed whole, or rolled back; a full disk
        raised as StorageFull, a damaged index rebuilt and raised as IndexCorrupt."""
        with self._lock, self._guard():
            self._db.execute("BEGIN")
            try:
                yield
                self._db.execute("COMMIT")
            except BaseException as e:
                if self._db.in_transaction:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                _raise_full(e)
                raise

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        """Around every use of the index (under the lock)."""
        try:
            yield
        except sqlite3.DatabaseError as e:
            if not is_corrupt(e):
                raise
            self._rebuild(e)
            raise IndexCorrupt(f"index damaged and rebuilt: {e}") from None

    def _listed(self, event_id: str) -> bool:
        with self._lock, self._guard():
            return self._db.execute("SELECT 1 FROM events WHERE id = ?", (event_id,)).fetchone() is not None

    def _set_zones(self, event_id: str, zones: Iterable[str]) -> None:
        self._db.executemany("INSERT OR IGNORE INTO event_zones (id, zone) VALUES (?, ?)",
                             [(event_id, z) for z in zones])

    def _write_meta(self, event_id: str) -> None:
        """event.json from the row (under the lock: the events and recorder threads both write it)."""
        r = self._db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
        if r is None:
            return
        row = dict(r)
        row["box"] = json.loads(row["box"])
        row["zones"] = self._zones([event_id]).get(event_id, [])
        write_atomic(self.folder(event_id) / META, ondisk.meta_bytes(row))

    def add_clip(self, event_id: str, tmp: Path, clip_start: float, clip_end: float) -> bool:
        """A finished, fsync'ed clip at `tmp` becomes the event's clip; False (and the file
        removed) if the event is gone."""
        with self._lock:
            if not self._listed(event_id):
                tmp.unlink(missing_ok=True)
                return False
            final = self.folder(event_id) / CLIP
            os.replace(tmp, final)
            size = final.stat().st_size

            def change() -> None:
                self._db.execute("UPDATE events SET clip_bytes = ?, clip_start = ?, clip_end = ? WHERE id = ?",
                                 (size, clip_start, clip_end, event_id))
                self._write_meta(event_id)

            self._commit(change)
        return True

    def probe(self) -> None:
        """One small write to the folder and one to the index: OSError or sqlite3.Error while
        writes still fail."""
        write_atomic(self.root / ondisk.PROBE, b"")
        (self.root / ondisk.PROBE).unlink()
        with self._transaction():
            self._db.execute("PRAGMA user_version = 1")

    # --- reading (HTTP threads) --------------------------------------------------------------

    def _row(self, r: sqlite3.Row, zones: list[str]) -> Stored:
        return Stored(r["id"], r["seq"], r["label"], r["score"], r["start"], r["last"], r["end"], r["frames"],
                      json.loads(r["box"]), zones, r["snapshot_bytes"], r["clip_bytes"], r["clip_start"],
                      r["clip_end"], r["camera"])

    @_once_more_if_rebuilt
    def query(self, label: str | None = None, zone: str | None = None, since: float | None = None,
              until: float | None = None, limit: int = 100, camera: str | None = None) -> list[Stored]:
        """Events, newest first."""
        where, args = [], []
        if camera:
            where.append("camera = ?")
            args.append(camera)
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
        with self._lock, self._guard():
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

    @_once_more_if_rebuilt
    def get(self, event_id: str) -> Stored | None:
        if not ID_RE.fullmatch(event_id):
            return None
        with self._lock, self._guard():
            r = self._db.execute("SELECT * FROM events WHERE id = ?", (event_id,)).fetchone()
            if r is None:
                return None
            return self._row(r, self._zones([event_id]).get(event_id, []))

    def open(self, event_id: str, name: str) -> BinaryIO | None:
        """A listed event's finished file, open for reading, or None. A link planted in the store
        (for the file or its folder) is refused with one warning."""
        if name not in FILES:
            return None
        ev = self.get(event_id)
        if ev is None or (name == CLIP and not ev.clip_bytes) or (name != CLIP and not ev.snapshot_bytes):
            return None
        try:
            return ondisk.open_regular(self.root, event_id, name)
        except FileNotFoundError:
            return None
        except OSError as e:
            where = f"{event_id}/{name}"
            with self._lock:
                first = where not in self._refused and len(self._refused) < 1000
                self._refused.add(where)
            if first:
                log.warning("record: %s in %s not served: %s (only regular files the store wrote are served, "
                            "never a link)", where, self.root, os.strerror(e.errno) if e.errno else e)
            return None

    @_once_more_if_rebuilt
    def count(self) -> int:
        with self._lock, self._guard():
            return self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0]

    @_once_more_if_rebuilt
    def total_bytes(self) -> int:
        """Bytes of every listed file plus the index itself."""
        with self._lock, self._guard():
            files = self._db.execute("SELECT COALESCE(SUM(snapshot_bytes + clip_bytes), 0) FROM events").fetchone()[0]
        index = sum((self.root / n).stat().st_size for n in INDEX_FILES if (self.root / n).is_file())
        return int(files) + index

    # --- deleting ----------------------------------------------------------------------------

    @_once_more_if_rebuilt
    def delete(self, event_id: str) -> bool:
        """event.json first (so a crash cannot bring the event back from its folder), then the
        row, then the store's own files; whatever else is in the folder stays."""
        if not ID_RE.fullmatch(event_id) or not self._listed(event_id):
            return False
        ondisk.remove_own(self.root, event_id, frozenset({META}))
        with self._lock, self._guard():
            gone = self._db.execute("DELETE FROM events WHERE id = ?", (event_id,)).rowcount > 0
        if gone:
            ondisk.remove_own(self.root, event_id)
        return gone

    def enforce(self, now_wall: float | None = None, live: Iterable[str] = ()) -> int:
        """Retention: delete the oldest events beyond max_days, then beyond max_bytes; events
        still live are kept. Returns how many were deleted."""
        now_wall = clock.wall() if now_wall is None else now_wall
        keep = set(live)
        deleted = 0
        if self.max_age_s > 0:
            with self._lock, self._guard():
                old = [r[0] for r in self._db.execute("SELECT id FROM events WHERE start < ? ORDER BY start",
                                                      (now_wall - self.max_age_s,))]
            for eid in old:
                if eid not in keep and self.delete(eid):
                    deleted += 1
        if self.max_bytes != float("inf"):
            total = self.total_bytes()
            if total > self.max_bytes:
                with self._lock, self._guard():
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

    # --- start-up, and after a rebuild ---------------------------------------------------------

    def _recover(self) -> dict[str, int]:
        """After an unclean stop or on a new index: close open events, remove the store's own
        temporary files, list event folders the index lacks (from their event.json), and forget
        pictures or clips that are missing. Nothing the store did not make is touched."""
        out = {"closed": 0, "removed_files": 0, "fixed": 0, "reindexed": 0}
        with self._lock:
            out["closed"] = self._db.execute('UPDATE events SET "end" = last WHERE "end" IS NULL').rowcount
            rows = {r["id"]: r for r in self._db.execute("SELECT id, snapshot_bytes, clip_bytes FROM events")}
            for eid in ondisk.event_folders(self.root):
                out["removed_files"] += ondisk.remove_own(self.root, eid, TEMPORARY)
                if eid in rows:
                    out["fixed"] += self._check_files(rows[eid])
                    if not os.path.lexists(self.root / eid / META):
                        with contextlib.suppress(OSError):
                            self._write_meta(eid)
                    continue
                meta = ondisk.read_meta(self.root, eid)
                if meta is None:  # pictures whose event never committed, or a delete cut short
                    out["removed_files"] += ondisk.remove_own(self.root, eid)
                    continue
                self._reindex(meta)
                out["reindexed"] += 1
            missing = set(rows) - set(ondisk.event_folders(self.root))
            for eid in missing:
                out["fixed"] += self._check_files(rows[eid])
        if any(out.values()):
            log.info("record: index %s recovered: %d open event(s) closed, %d temporary file(s) removed, "
                     "%d entr%s fixed, %d event(s) listed again from their folders", self.root / INDEX,
                     out["closed"], out["removed_files"], out["fixed"], "y" if out["fixed"] == 1 else "ies",
                     out["reindexed"])
        return out

    def _check_files(self, r: sqlite3.Row) -> int:
        """A listed event's sizes set to what is on disk: 1 if they changed."""
        eid = r["id"]
        have = ondisk.sizes(self.root, eid)
        snap_ok = SNAPSHOT in have and CROP in have
        clip_ok = CLIP in have
        if r["snapshot_bytes"] and not snap_ok or r["clip_bytes"] and not clip_ok:
            self._db.execute("UPDATE events SET snapshot_bytes = ?, clip_bytes = ? WHERE id = ?",
                             (r["snapshot_bytes"] if snap_ok else 0, r["clip_bytes"] if clip_ok else 0, eid))
            return 1
        return 0

    def _reindex(self, m: dict[str, Any]) -> None:
        have = ondisk.sizes(self.root, m["id"])
        snap = have[SNAPSHOT] + have[CROP] if SNAPSHOT in have and CROP in have else 0
        end = m["end"] if m["end"] is not None else m["last"]
        self._db.execute(
            'INSERT INTO events (id, seq, label, score, start, last, "end", frames, box, snapshot_bytes, clip_bytes, '
            'clip_start, clip_end, camera) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (m["id"], m["seq"], m["label"], m["score"], m["start"], m["last"], end, m["frames"],
             _box_json(m["box"]), snap, have.get(CLIP, 0), m["clip_start"], m["clip_end"], m["camera"]))
        self._set_zones(m["id"], m["zones"])


def event_json(ev: Stored, base: str = "") -> dict[str, Any]:
    """An event as the API gives it; `snapshot`, `crop` and `clip` are URL paths on this server."""
    return {
        "id": ev.id,
        "seq": ev.seq,
        "camera": ev.camera,
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
