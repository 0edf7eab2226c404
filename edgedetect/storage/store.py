"""The event store: one folder per event and one per review item (see ondisk.py for what is
on disk), and an index in SQLite (WAL).

A review item groups the objects whose events overlap in time on one camera (a group of people
walking through together is one thing to look at), and holds the one clip of those seconds and
every object's boxes over time. Each event names the review item it started in; an object still
in view when a long item is cut continues into the next one. Deleting and retention work on
whole review items. An event stored without a review item (by `begin` without one, or listed
from an event.json that names none) gets a review item of its own, whose folder is the event's.

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
from edgedetect.storage.ondisk import (BOXES, CLIP, CROP, FILES, ID_RE, INDEX, INDEX_FILES, META, REVIEW_FILES,
                                       REVIEW_KEYS, REVIEW_META, SNAPSHOT, TEMPORARY, is_review)
from edgedetect.system.files import TMP_SUFFIX, StorageFull, write_atomic

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
CREATE TABLE IF NOT EXISTS reviews (
    id TEXT PRIMARY KEY,
    camera TEXT NOT NULL DEFAULT '',
    start REAL NOT NULL,
    "end" REAL,
    folder TEXT NOT NULL,
    clip_bytes INTEGER NOT NULL DEFAULT 0,
    boxes_bytes INTEGER NOT NULL DEFAULT 0,
    clip_start REAL,
    clip_end REAL
);
CREATE INDEX IF NOT EXISTS reviews_start ON reviews (start);
CREATE TABLE IF NOT EXISTS review_events (
    review TEXT NOT NULL REFERENCES reviews (id) ON DELETE CASCADE,
    event TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE,
    PRIMARY KEY (review, event)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS review_events_event ON review_events (event);
"""
# Columns added, with ALTER TABLE, to an index that lacks them when it is opened.
ADDED_COLUMNS = (("camera", "TEXT NOT NULL DEFAULT ''"), ("review", "TEXT"))
BOXES_MAX_BYTES = 8 * 1024 * 1024  # a boxes.json larger than this is not served
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
    review: str | None = None  # the review item it started in

    @property
    def bytes(self) -> int:
        return self.snapshot_bytes + self.clip_bytes


@dataclass(frozen=True, slots=True)
class Review:
    """One review item as the index has it, with its objects (oldest first)."""

    id: str
    camera: str
    start: float
    end: float | None
    folder: str  # where its clip is: its own folder, or the event's for an event's own item
    clip_bytes: int
    boxes_bytes: int
    clip_start: float | None
    clip_end: float | None
    objects: list[Stored]


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

    def review_folder(self, review_id: str) -> Path:
        if not is_review(review_id):
            raise ValueError(f"not a review id: {review_id!r}")
        return self.root / review_id

    def clip_tmp(self, review_id: str) -> Path:
        """Where the recorder writes a review item's clip before it is complete."""
        return self.review_folder(review_id) / f".{CLIP}{TMP_SUFFIX}"

    # --- writing (events thread, recorder thread) ---------------------------------------------

    def begin(self, event_id: str, seq: int, label: str, score: float, start: float, last: float,
              box: Iterable[float], zones: Iterable[str], snapshot: bytes, crop: bytes, frames: int = 0,
              camera: str = "", review: str | None = None) -> None:
        """A new event, in the listed review item `review` (None: an item of its own): its
        pictures first, then its event.json, then its row. A failure leaves none of them; if the
        index is found damaged meanwhile, the rebuilt index lists the event."""
        folder = self.folder(event_id)
        if review is not None and not is_review(review):
            raise ValueError(f"not a review id: {review!r}")
        box, zones = [round(v, 4) for v in box], sorted(set(zones))
        row = {"id": event_id, "seq": seq, "label": label, "score": score, "start": start, "last": last,
               "end": None, "frames": frames, "box": box, "zones": zones, "clip_start": None, "clip_end": None,
               "camera": camera, "review": review or f"r{event_id}"}
        try:
            folder.mkdir(exist_ok=True)
            write_atomic(folder / SNAPSHOT, snapshot)
            write_atomic(folder / CROP, crop)
            write_atomic(folder / META, ondisk.meta_bytes(row))

            def insert() -> None:
                self._db.execute(
                    'INSERT OR REPLACE INTO events (id, seq, label, score, start, last, frames, box, snapshot_bytes, '
                    'camera, review) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
                    (event_id, seq, label, score, start, last, frames, _box_json(box), len(snapshot) + len(crop),
                     camera, row["review"]))
                self._set_zones(event_id, zones)
                if review is None:
                    self._solo_review(event_id, camera, start, None)
                elif not self._in_review(review, event_id):
                    raise KeyError(f"review item {review} is not listed")

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

    def _solo_review(self, event_id: str, camera: str, start: float, end: float | None) -> None:
        """An event's review item of its own, in the event's folder (under a transaction)."""
        rid = f"r{event_id}"
        self._db.execute('INSERT OR IGNORE INTO reviews (id, camera, start, "end", folder) VALUES (?, ?, ?, ?, ?)',
                         (rid, camera, start, end, event_id))
        self._db.execute("INSERT OR IGNORE INTO review_events (review, event) VALUES (?, ?)", (rid, event_id))
        self._db.execute("UPDATE events SET review = ? WHERE id = ?", (rid, event_id))

    def _in_review(self, review_id: str, event_id: str) -> bool:
        """`event_id` added to the listed review item (under a transaction); False if it is not listed."""
        if self._db.execute("SELECT 1 FROM reviews WHERE id = ?", (review_id,)).fetchone() is None:
            return False
        self._db.execute("INSERT OR IGNORE INTO review_events (review, event) VALUES (?, ?)", (review_id, event_id))
        if self._db.execute("SELECT folder FROM reviews WHERE id = ?", (review_id,)).fetchone()[0] == review_id:
            self._write_review_meta(review_id)
        return True

    # --- review items (events thread, recorder thread) ------------------------------------------

    def begin_review(self, review_id: str, camera: str, start: float) -> None:
        """A new review item (wall-clock start): its folder and review.json, then its row."""
        folder = self.review_folder(review_id)
        row = {"id": review_id, "camera": camera, "start": start, "end": None, "objects": [], "clip_start": None,
               "clip_end": None}
        try:
            folder.mkdir(exist_ok=True)
            write_atomic(folder / REVIEW_META, ondisk.meta_bytes(row, REVIEW_KEYS))
            self._commit(lambda: self._db.execute(
                'INSERT OR REPLACE INTO reviews (id, camera, start, folder) VALUES (?, ?, ?, ?)',
                (review_id, camera, start, review_id)))
        except BaseException:
            ondisk.remove_own(self.root, review_id)
            raise

    def join_review(self, review_id: str, event_id: str) -> bool:
        """A listed event (started in an earlier item) goes on in this one. False if either is gone."""
        ok = False

        def change() -> None:
            nonlocal ok
            ok = self._listed(event_id) and self._in_review(review_id, event_id)

        self._commit(change)
        return ok

    def end_review(self, review_id: str, end: float, boxes: bytes) -> bool:
        """The review item's last object has gone (wall-clock `end`); its boxes.json is written.
        False if the item is gone."""
        with self._lock:
            if not self._review_listed(review_id):
                return False
            write_atomic(self.review_folder(review_id) / BOXES, boxes)

            def change() -> None:
                self._db.execute('UPDATE reviews SET "end" = ?, boxes_bytes = ? WHERE id = ?',
                                 (end, len(boxes), review_id))
                self._write_review_meta(review_id)

            self._commit(change)
        return True

    def _review_listed(self, review_id: str) -> bool:
        with self._lock, self._guard():
            return self._db.execute("SELECT 1 FROM reviews WHERE id = ?", (review_id,)).fetchone() is not None

    def _write_review_meta(self, review_id: str) -> None:
        """review.json from the row and its objects (under the lock)."""
        r = self._db.execute("SELECT * FROM reviews WHERE id = ?", (review_id,)).fetchone()
        if r is None or r["folder"] != review_id:
            return
        row = dict(r)
        row["objects"] = [e for (e,) in self._db.execute(
            "SELECT re.event FROM review_events AS re JOIN events ON events.id = re.event WHERE re.review = ? "
            "ORDER BY events.start",
            (review_id,))]
        write_atomic(self.review_folder(review_id) / REVIEW_META, ondisk.meta_bytes(row, REVIEW_KEYS))

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

    def add_clip(self, review_id: str, tmp: Path, clip_start: float, clip_end: float) -> bool:
        """A finished, fsync'ed clip at `tmp` becomes the review item's clip; False (and the file
        removed) if the item is gone."""
        with self._lock:
            if not self._review_listed(review_id):
                tmp.unlink(missing_ok=True)
                return False
            final = self.review_folder(review_id) / CLIP
            os.replace(tmp, final)
            size = final.stat().st_size

            def change() -> None:
                self._db.execute("UPDATE reviews SET clip_bytes = ?, clip_start = ?, clip_end = ? WHERE id = ?",
                                 (size, clip_start, clip_end, review_id))
                self._write_review_meta(review_id)

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
                      r["clip_end"], r["camera"], r["review"])

    def _events(self, ids: list[str]) -> dict[str, Stored]:
        """The listed events of `ids` (under the lock)."""
        out: dict[str, Stored] = {}
        zones = self._zones(ids)
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._db.execute(f"SELECT * FROM events WHERE id IN ({marks})", chunk):
                out[r["id"]] = self._row(r, zones.get(r["id"], []))
        return out

    def _reviews(self, rows: list[sqlite3.Row]) -> list[Review]:
        """Review rows with their objects, oldest object first (under the lock)."""
        ids = [r["id"] for r in rows]
        members: dict[str, list[str]] = {}
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            marks = ",".join("?" * len(chunk))
            for r in self._db.execute(f"SELECT review, event FROM review_events WHERE review IN ({marks})", chunk):
                members.setdefault(r["review"], []).append(r["event"])
        events = self._events(sorted({e for m in members.values() for e in m}))
        out = []
        for r in rows:
            objects = sorted((events[e] for e in members.get(r["id"], []) if e in events), key=lambda e: (e.start, e.seq))
            out.append(Review(r["id"], r["camera"], r["start"], r["end"], r["folder"], r["clip_bytes"],
                              r["boxes_bytes"], r["clip_start"], r["clip_end"], objects))
        return out

    @_once_more_if_rebuilt
    def query_reviews(self, camera: str | None = None, label: str | None = None, zone: str | None = None,
                      since: float | None = None, until: float | None = None, before: tuple[float, str] | None = None,
                      limit: int = 50) -> list[Review]:
        """Review items, newest first: started at or after `since` and before `until`, and (for
        the next page) before the (start, id) of `before`; with `label` or `zone`, the items with
        an object of that label or one that entered that zone."""
        where, args = [], []
        if camera:
            where.append("camera = ?")
            args.append(camera)
        if label:
            where.append("id IN (SELECT re.review FROM review_events AS re JOIN events ON events.id = re.event "
                         "WHERE label = ?)")
            args.append(label)
        if zone:
            where.append("id IN (SELECT re.review FROM review_events AS re JOIN event_zones ON event_zones.id = re.event "
                         "WHERE zone = ?)")
            args.append(zone)
        if since is not None:
            where.append("start >= ?")
            args.append(since)
        if until is not None:
            where.append("start < ?")
            args.append(until)
        if before is not None:
            where.append("(start < ? OR (start = ? AND id < ?))")
            args.extend((before[0], before[0], before[1]))
        sql = "SELECT * FROM reviews" + (" WHERE " + " AND ".join(where) if where else "")
        sql += " ORDER BY start DESC, id DESC LIMIT ?"
        args.append(max(0, int(limit)))
        with self._lock, self._guard():
            return self._reviews(self._db.execute(sql, args).fetchall())

    @_once_more_if_rebuilt
    def get_review(self, review_id: str) -> Review | None:
        if not is_review(review_id):
            return None
        with self._lock, self._guard():
            rows = self._db.execute("SELECT * FROM reviews WHERE id = ?", (review_id,)).fetchall()
            return self._reviews(rows)[0] if rows else None

    @_once_more_if_rebuilt
    def reviews_by_id(self, review_ids: Iterable[str]) -> dict[str, Review]:
        ids = sorted({r for r in review_ids if r and is_review(r)})
        with self._lock, self._guard():
            rows = []
            for i in range(0, len(ids), 500):
                chunk = ids[i:i + 500]
                rows += self._db.execute(f"SELECT * FROM reviews WHERE id IN ({','.join('?' * len(chunk))})",
                                         chunk).fetchall()
            return {rv.id: rv for rv in self._reviews(rows)}

    @_once_more_if_rebuilt
    def count_reviews(self) -> int:
        with self._lock, self._guard():
            return self._db.execute("SELECT COUNT(*) FROM reviews").fetchone()[0]

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
        """A listed event's or review item's finished file, open for reading, or None. A link
        planted in the store (for the file or its folder) is refused with one warning."""
        if is_review(event_id):
            rv = self.get_review(event_id)
            if rv is None or name not in REVIEW_FILES:
                return None
            if (name == CLIP and not rv.clip_bytes) or (name == BOXES and not rv.boxes_bytes):
                if name == CLIP and rv.folder != rv.id:  # an event's own item: the event's clip
                    return self.open(rv.folder, CLIP)
                return None
            folder = rv.folder if name == CLIP else rv.id
        else:
            if name not in FILES:
                return None
            ev = self.get(event_id)
            if ev is None or (name == CLIP and not ev.clip_bytes) or (name != CLIP and not ev.snapshot_bytes):
                return None
            folder = event_id
        try:
            return ondisk.open_regular(self.root, folder, name)
        except FileNotFoundError:
            return None
        except OSError as e:
            where = f"{folder}/{name}"
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
            files += self._db.execute("SELECT COALESCE(SUM(clip_bytes + boxes_bytes), 0) FROM reviews").fetchone()[0]
        index = sum((self.root / n).stat().st_size for n in INDEX_FILES if (self.root / n).is_file())
        return int(files) + index

    # --- deleting ----------------------------------------------------------------------------

    @_once_more_if_rebuilt
    def delete(self, event_id: str) -> bool:
        """One event; a review item it leaves with no object goes with it."""
        if not ID_RE.fullmatch(event_id) or not self._listed(event_id):
            return False
        with self._lock, self._guard():
            reviews = [r for (r,) in self._db.execute("SELECT review FROM review_events WHERE event = ?", (event_id,))]
        gone = self._drop_event(event_id)
        for rid in reviews:
            with self._lock, self._guard():
                empty = self._db.execute("SELECT 1 FROM review_events WHERE review = ?", (rid,)).fetchone() is None
            if empty:
                self._drop_review(rid)
            else:
                with self._lock, contextlib.suppress(OSError):
                    self._write_review_meta(rid)
        return gone

    @_once_more_if_rebuilt
    def delete_review(self, review_id: str) -> bool:
        """A review item, its clip and boxes, and its objects that are in no other item."""
        if not is_review(review_id) or not self._review_listed(review_id):
            return False
        with self._lock, self._guard():
            only_here = [e for (e,) in self._db.execute(
                "SELECT event FROM review_events AS a WHERE review = ? AND NOT EXISTS "
                "(SELECT 1 FROM review_events AS b WHERE b.event = a.event AND b.review != a.review)", (review_id,))]
        # What could bring them back from their folders first, then the rows (one commit), then the files.
        own = (self.root / review_id).is_dir()
        for eid in only_here:
            ondisk.remove_own(self.root, eid, frozenset({META}))
        if own:
            ondisk.remove_own(self.root, review_id, frozenset({REVIEW_META}))

        def drop() -> None:
            self._db.executemany("DELETE FROM events WHERE id = ?", [(e,) for e in only_here])
            self._db.execute("DELETE FROM reviews WHERE id = ?", (review_id,))

        self._commit(drop)
        for eid in only_here:
            ondisk.remove_own(self.root, eid)
        if own:
            ondisk.remove_own(self.root, review_id)
        return True

    def _drop_event(self, event_id: str) -> bool:
        """event.json first (so a crash cannot bring the event back from its folder), then the
        row, then the store's own files; whatever else is in the folder stays."""
        ondisk.remove_own(self.root, event_id, frozenset({META}))
        with self._lock, self._guard():
            gone = self._db.execute("DELETE FROM events WHERE id = ?", (event_id,)).rowcount > 0
        if gone:
            ondisk.remove_own(self.root, event_id)
        return gone

    def _drop_review(self, review_id: str) -> bool:
        """review.json first, then the row, then its own files (an event's own item has none)."""
        own = is_review(review_id) and (self.root / review_id).is_dir()
        if own:
            ondisk.remove_own(self.root, review_id, frozenset({REVIEW_META}))
        with self._lock, self._guard():
            gone = self._db.execute("DELETE FROM reviews WHERE id = ?", (review_id,)).rowcount > 0
        if own:
            ondisk.remove_own(self.root, review_id)
        return gone

    def enforce(self, now_wall: float | None = None, live: Iterable[str] = ()) -> int:
        """Retention, by whole review items: the oldest beyond max_days, then beyond max_bytes; an
        item that is live (its id or one of its events' ids in `live`) is kept. Returns how many
        events were deleted."""
        now_wall = clock.wall() if now_wall is None else now_wall
        keep = set(live)
        deleted = 0
        with self._lock, self._guard():
            rows = self._db.execute(
                "SELECT reviews.id, reviews.start, reviews.clip_bytes + reviews.boxes_bytes "
                "+ COALESCE(SUM(events.snapshot_bytes + events.clip_bytes), 0), GROUP_CONCAT(events.id) "
                "FROM reviews LEFT JOIN review_events AS re ON re.review = reviews.id LEFT JOIN events ON events.id = re.event "
                "GROUP BY reviews.id ORDER BY reviews.start, reviews.id").fetchall()
        total = self.total_bytes() if self.max_bytes != float("inf") else 0
        for rid, start, size, members in rows:
            old = self.max_age_s > 0 and start < now_wall - self.max_age_s
            if not old and total <= self.max_bytes:
                break
            if rid in keep or any(e in keep for e in (members or "").split(",")):
                continue
            before = self.count()
            if self.delete_review(rid):
                deleted += before - self.count()
                total -= size
        if deleted:
            # The deletions' pages in the WAL count against max_mb too: written back and truncated.
            with self._lock, self._guard(), contextlib.suppress(sqlite3.OperationalError):
                self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
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
            self._recover_reviews(out)
        if any(out.values()):
            log.info("record: index %s recovered: %d open event(s) closed, %d temporary file(s) removed, "
                     "%d entr%s fixed, %d event(s) listed again from their folders", self.root / INDEX,
                     out["closed"], out["removed_files"], out["fixed"], "y" if out["fixed"] == 1 else "ies",
                     out["reindexed"])
        return out

    def _recover_reviews(self, out: dict[str, int]) -> None:
        """The review items' part of _recover (under the lock)."""
        listed = {r["id"]: r for r in self._db.execute("SELECT id, folder, clip_bytes, boxes_bytes FROM reviews")}
        for rid in ondisk.review_folders(self.root):
            out["removed_files"] += ondisk.remove_own(self.root, rid, ondisk.REVIEW_TEMPORARY)
            if rid in listed:
                continue
            meta = ondisk.read_review(self.root, rid)
            if meta is None:
                out["removed_files"] += ondisk.remove_own(self.root, rid)
                continue
            have = ondisk.sizes(self.root, rid)
            self._db.execute(
                'INSERT INTO reviews (id, camera, start, "end", folder, clip_bytes, boxes_bytes, clip_start, clip_end) '
                'VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
                (rid, meta["camera"], meta["start"], meta["end"], rid, have.get(CLIP, 0), have.get(BOXES, 0),
                 meta["clip_start"], meta["clip_end"]))
            self._db.executemany("INSERT OR IGNORE INTO review_events (review, event) SELECT ?, id FROM events WHERE id = ?",
                                 [(rid, e) for e in meta["objects"]])
            out["reindexed"] += 1
        for rid, r in listed.items():
            if r["folder"] != rid:
                continue
            have = ondisk.sizes(self.root, rid)
            if (r["clip_bytes"] and CLIP not in have) or (r["boxes_bytes"] and BOXES not in have):
                self._db.execute("UPDATE reviews SET clip_bytes = ?, boxes_bytes = ? WHERE id = ?",
                                 (r["clip_bytes"] if CLIP in have else 0, r["boxes_bytes"] if BOXES in have else 0, rid))
                out["fixed"] += 1
        self._db.execute(
            'UPDATE reviews SET "end" = COALESCE((SELECT MAX(events."end") FROM review_events AS re JOIN events ON '
            'events.id = re.event WHERE re.review = reviews.id), start) WHERE "end" IS NULL').rowcount
        # Events in no review item: the one their event.json names if it is listed, else one of their own.
        self._db.execute("INSERT OR IGNORE INTO review_events (review, event) SELECT review, id FROM events WHERE "
                         "review IN (SELECT id FROM reviews) AND id NOT IN (SELECT event FROM review_events)")
        for r in self._db.execute('SELECT id, camera, start, "end" FROM events WHERE id NOT IN '
                                  '(SELECT event FROM review_events)').fetchall():
            self._solo_review(r["id"], r["camera"], r["start"], r["end"])
        # Items whose objects are all gone (deleted, or lost with their folders) go too.
        for (rid,) in self._db.execute("SELECT id FROM reviews WHERE id NOT IN (SELECT review FROM review_events) "
                                       "AND \"end\" IS NOT NULL").fetchall():
            self._drop_review(rid)

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
            'clip_start, clip_end, camera, review) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)',
            (m["id"], m["seq"], m["label"], m["score"], m["start"], m["last"], end, m["frames"],
             _box_json(m["box"]), snap, have.get(CLIP, 0), m["clip_start"], m["clip_end"], m["camera"], m["review"]))
        self._set_zones(m["id"], m["zones"])


def event_json(ev: Stored, base: str = "", review: Review | None = None) -> dict[str, Any]:
    """An event as the API gives it; `snapshot`, `crop` and `clip` are URL paths on this server.
    Its clip is its review item's (`review`, when given and it has one)."""
    clip, clip_start, clip_end = None, ev.clip_start, ev.clip_end
    if ev.clip_bytes:
        clip = f"{base}/events/{ev.id}/{CLIP}"
    elif review is not None and review.clip_bytes:
        clip, clip_start, clip_end = f"{base}/reviews/{review.id}/{CLIP}", review.clip_start, review.clip_end
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
        "review": ev.review,
        "snapshot": f"{base}/events/{ev.id}/snapshot.jpg" if ev.snapshot_bytes else None,
        "crop": f"{base}/events/{ev.id}/crop.jpg" if ev.snapshot_bytes else None,
        "clip": clip,
        "clip_start": clip_start,
        "clip_end": clip_end,
        "bytes": ev.bytes,
    }


def review_json(rv: Review, base: str = "") -> dict[str, Any]:
    """A review item as the API gives it, with its objects as event_json gives them."""
    objects = [event_json(o, base, rv) for o in rv.objects]
    own_clip = rv.clip_bytes > 0
    legacy = next((o for o in rv.objects if o.clip_bytes), None) if rv.folder != rv.id else None
    best = max(rv.objects, key=lambda o: o.score, default=None)
    last = max((o.end if o.end is not None else o.last for o in rv.objects), default=rv.start)
    end = rv.end
    return {
        "id": rv.id,
        "camera": rv.camera,
        "start": rv.start,
        "end": end,
        "duration": round(max(0.0, (end if end is not None else last) - rv.start), 3),
        "labels": sorted({o.label for o in rv.objects}),
        "zones": sorted({z for o in rv.objects for z in o.zones}),
        "objects": objects,
        "thumbnail": f"{base}/events/{best.id}/crop.jpg" if best is not None and best.snapshot_bytes else None,
        "clip": (f"{base}/reviews/{rv.id}/{CLIP}" if own_clip or legacy is not None else None),
        "clip_start": rv.clip_start if own_clip else (legacy.clip_start if legacy is not None else None),
        "clip_end": rv.clip_end if own_clip else (legacy.clip_end if legacy is not None else None),
        "boxes": f"{base}/reviews/{rv.id}/{BOXES}" if rv.boxes_bytes else None,
        "bytes": rv.clip_bytes + rv.boxes_bytes + sum(o.bytes for o in rv.objects),
    }
