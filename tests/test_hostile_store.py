"""The event store against what users and attackers put in its folder: a folder that is not its
own, a damaged index, a drive that turns read-only, links planted in the store. The store never
destroys a file it did not make, never loses an event it wrote, and never stops detection."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MEDIA
from daemonproc import DaemonProcess
from recordkit import ext4_drive, record_config
from edgedetect.storage import ondisk
from edgedetect.storage.ondisk import CLIP, CROP, META, SNAPSHOT, NotOurs
from edgedetect.storage.store import EventStore

PHOTO = (MEDIA / "kite_and_cold.jpg").read_bytes()
JPEG = cv2.imencode(".jpg", cv2.imread(str(MEDIA / "pets.jpg")))[1].tobytes()
EVENT_LOGGERS = ("edgedetect.sinks.events", "edgedetect.tracking", "edgedetect.storage", "edgedetect.messaging")


def user_files(root: Path) -> dict[str, str]:
    """A user's own files in `root`: relative path -> sha256."""
    (root / "Photos" / "2024").mkdir(parents=True)
    (root / "Photos" / "2024" / "IMG_0001.jpg").write_bytes(PHOTO)
    (root / "notes.txt").write_text("do not delete\n")
    (root / "lost+found").mkdir()
    return tree(root)


def tree(root: Path) -> dict[str, str]:
    """Every file and folder under `root` but the index (which SQLite writes): path -> sha256."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*")) if not p.name.startswith("index.sqlite3")}


def fill_store(root: Path, n: int, zones=("door",)) -> EventStore:
    """n events of yesterday (the daemon's retention keeps them), every 4th ended."""
    t0 = int(time.time()) - 86400
    store = EventStore(root)
    for i in range(1, n + 1):
        eid = f"{t0 + i}.000-{i}"
        store.begin(eid, i, "person" if i % 2 else "dog", 0.5 + i / (4 * n), t0 + i, t0 + 1 + i,
                    (0.1, 0.2, 0.3, 0.4), zones if i % 3 else (), JPEG, JPEG, frames=i)
        if i % 4 == 0:
            store.update(eid, 0.99, t0 + 3 + i, ["yard"], i + 5, end=t0 + 4.0 + i)
    return store


def reviews(store: EventStore) -> list[tuple]:
    return [(r.id, r.camera, r.start, r.end, r.clip_bytes, r.boxes_bytes, r.clip_start, [o.id for o in r.objects])
            for r in store.query_reviews(limit=10_000)]


def event_id(store: EventStore, seq: int) -> str:
    return next(e.id for e in store.query(limit=10_000) if e.seq == seq)


def listing(store: EventStore) -> list[tuple]:
    return [(e.id, e.label, round(e.score, 4), e.start, e.end, e.frames, e.zones, e.snapshot_bytes, e.clip_bytes,
             e.clip_start) for e in store.query(limit=10_000)]


# --- 1: the store owns only what it made -------------------------------------------------------------


def test_a_folder_of_someone_elses_files_is_refused_and_kept(tmp_path: Path) -> None:
    before = user_files(tmp_path)
    with pytest.raises(NotOurs) as e:
        EventStore(tmp_path)
    assert "Photos" in str(e.value) and "lost+found" in str(e.value) and "notes.txt" in str(e.value)
    assert tree(tmp_path) == before  # nothing removed, nothing added


def test_recovery_removes_only_the_stores_own_temporary_files(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    store = fill_store(root, 2)
    first = event_id(store, 1)
    store.close()
    assert (root / ondisk.MARKER).is_file()
    # later, a user (or another program) puts files into the store's folder and its event folders
    (root / "notes.txt").write_text("mine")
    (root / first / "holiday.jpg").write_bytes(PHOTO)
    (root / "1999.000-9").mkdir()  # named like an event, but the user's
    (root / "1999.000-9" / "mine.txt").write_text("mine")
    (root / first / ".crop.jpg.tmp").write_bytes(b"half")  # the store's own leftover
    (root / first / ".crop.jpg.tmp.bak").write_bytes(b"the user's")  # not the exact pattern
    kept = {k: v for k, v in tree(root).items() if not k.endswith(".crop.jpg.tmp")}
    again = EventStore(root)
    assert again.recovered["removed_files"] == 1
    assert tree(root) == kept and len(again.query()) == 2
    # deleting an event removes the store's files, not the user's photo beside them
    assert again.delete(first)
    assert (root / first / "holiday.jpg").read_bytes() == PHOTO
    assert sorted(p.name for p in (root / first).iterdir()) == [".crop.jpg.tmp.bak", "holiday.jpg"]


def test_a_store_without_its_marker_is_adopted_when_it_holds_only_its_own_files(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    fill_store(root, 3).close()
    (root / ondisk.MARKER).unlink()
    for folder in root.iterdir():
        if folder.is_dir():
            (folder / META).unlink()  # a store written before event.json existed
    store = EventStore(root)
    assert len(store.query()) == 3 and (root / ondisk.MARKER).is_file()
    assert all((root / e.id / META).is_file() for e in store.query())  # written at start for a later rebuild


@pytest.mark.slow
def test_daemon_refuses_a_foreign_folder_keeps_it_whole_and_detects(tmp_path: Path) -> None:
    usb = tmp_path / "usb"
    usb.mkdir()
    before = user_files(usb)
    with DaemonProcess("run", "--config", str(record_config(tmp_path, usb, loop=True))) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 30, timeout=30)
        events = d.json("/api/events")
        health = d.get("/healthz")[0]
        code, _ = d.terminate()
        out = d.output()
    assert tree(usb) == before, "files the store did not make were changed"
    warnings = [ln for ln in out.splitlines() if "WARNING" in ln and "record" in ln]
    assert len(warnings) == 1 and str(usb) in warnings[0] and "did not make" in warnings[0], out
    assert code == 0 and health == 200 and "Traceback" not in out
    assert events["record"]["paused"] and "did not make" in events["record"]["reason"] and events["total"] == 0


# --- 2: a damaged index ------------------------------------------------------------------------------


def overwrite(path: Path, offset: int, size: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        f.write(np.random.default_rng(7).integers(0, 256, size, np.uint8).tobytes())


@pytest.mark.parametrize("where", ["header", "middle"])
def test_a_damaged_index_is_moved_aside_and_rebuilt_from_the_folders(tmp_path: Path, where: str) -> None:
    root = tmp_path / "ev"
    store = fill_store(root, 300)
    fourth = event_id(store, 4)
    store.begin_review("r2000000000.000-1", "", 2e9)
    store.begin("2000000000.000-301", 301, "cat", 0.7, 2e9, 2e9 + 1, (0, 0, 1, 1), (), JPEG, JPEG,
                review="r2000000000.000-1")
    clip = store.clip_tmp("r2000000000.000-1")
    clip.write_bytes(b"\0\0\0\x18ftypmp42 a clip")
    assert store.add_clip("r2000000000.000-1", clip, 2e9 - 5, 2e9 + 6)
    store.end_review("r2000000000.000-1", 2e9 + 1, b'{"t0":0,"objects":{}}')
    store.close()
    store = EventStore(root)  # an undamaged restart: open events closed at their last sighting
    want, want_reviews = listing(store), reviews(store)
    store.close()
    index = root / "index.sqlite3"
    pages = index.stat().st_size // 4096
    assert pages > 8
    overwrite(index, 0 if where == "header" else (pages // 2) * 4096, 4096)
    again = EventStore(root)
    aside = [p.name for p in root.iterdir() if p.name.startswith("index.sqlite3.corrupt-")]
    assert len(aside) == 1 and again.rebuilt == 1
    assert again.recovered["reindexed"] == 302  # 301 events and the review item with a clip
    assert listing(again) == want  # every event, its label, zones, end, pictures and clip
    assert reviews(again) == want_reviews  # and every review item, with its objects
    with again.open("r2000000000.000-1", CLIP) as f:
        assert f.read().startswith(b"\0\0\0\x18ftyp")
    assert again.get(fourth).review == f"r{fourth}"  # an event stored without an item has its own
    # and the new index takes new events
    again.begin("2000000001.000-302", 302, "cat", 0.7, 2e9 + 1, 2e9 + 2, (0, 0, 1, 1), (), JPEG, JPEG)
    assert again.count() == 302


def test_an_index_damaged_in_use_is_rebuilt_and_reads_and_writes_go_on(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    store = fill_store(root, 200)
    want = [e.id for e in store.query(limit=1000)]
    with store._lock:
        store._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        store._db.execute("PRAGMA cache_size = 0")  # read pages from the file, as after a cache miss
        leaves = [p for (p,) in store._db.execute("SELECT pageno FROM dbstat WHERE name = 'events' AND "
                                                  "pagetype = 'leaf' ORDER BY pageno")]
    index = root / "index.sqlite3"
    overwrite(index, (leaves[len(leaves) // 2] - 1) * 4096, 4096)  # a page of the events in the middle
    assert [e.id for e in store.query(limit=1000)] == want  # answered from the rebuilt index
    assert store.rebuilt == 1
    assert sorted(o.id for r in store.query_reviews(limit=1000) for o in r.objects) == sorted(want)
    store.begin("2000000000.000-201", 201, "cat", 0.7, 2e9, 2e9 + 1, (0, 0, 1, 1), ("door",), JPEG, JPEG)
    assert store.count() == 201 and store.get("2000000000.000-201").zones == ["door"]


@pytest.mark.slow
@pytest.mark.parametrize("where", ["header", "middle"])
def test_daemon_with_a_damaged_index_keeps_every_event_and_detects(tmp_path: Path, where: str) -> None:
    root = tmp_path / "events"
    fill_store(root, 300).close()
    index = root / "index.sqlite3"
    overwrite(index, 0 if where == "header" else (index.stat().st_size // 4096 // 2) * 4096, 4096)
    cfg = record_config(tmp_path, root, extra='labels = ["giraffe"]')
    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 10, timeout=30)
        events = d.json("/api/events?limit=1000")
        health = d.get("/healthz")[0]
        code, _ = d.terminate()
        out = d.output()
    assert code == 0 and health == 200 and "Traceback" not in out
    assert events["total"] == 300 and not events["record"]["paused"]
    warnings = [ln for ln in out.splitlines() if "WARNING" in ln and "damaged" in ln]
    assert len(warnings) == 1 and "corrupt-" in warnings[0], out


# --- 4: a store that cannot be written --------------------------------------------------------------


@pytest.mark.slow
def test_a_drive_going_read_only_pauses_once_and_resumes_when_replugged(tmp_path: Path) -> None:
    with ext4_drive(tmp_path) as drive:
        root = drive.path / "edgedetect"
        cfg = record_config(tmp_path, root, loop=True, extra="pre_s = 1\npost_s = 1\nmin_free_mb = 1")
        with DaemonProcess("run", "--config", str(cfg)) as d:
            rec = lambda: d.json("/api/stats")["record"]  # noqa: E731
            d.wait_for(lambda: rec()["events_stored"] >= 2, timeout=60)
            stored = rec()["events_stored"]
            mark = len(d.lines)
            inferred = d.json("/api/stats")["frames_inferred"]
            drive.fail()
            d.wait_for(lambda: rec()["paused"], timeout=30)
            time.sleep(20)  # people keep walking: each event would have failed
            during = d.json("/api/stats")
            page = d.json("/api/events")
            lines_ro = d.lines[mark:]
            drive.replug()
            replugged = time.time()
            d.wait_for(lambda: not rec()["paused"], timeout=30)
            d.wait_for(lambda: rec()["events_stored"] > during["record"]["events_stored"], timeout=60)
            after = d.json("/api/events?limit=1000")
            health = d.get("/healthz")[0]
            code, _ = d.terminate()
            out = d.output()
    log_lines = [ln for ln in lines_ro if any(m in ln for m in EVENT_LOGGERS)]
    assert code == 0 and health == 200 and "Traceback" not in out
    assert len(log_lines) == 1 and "Read-only file system" in log_lines[0], log_lines
    assert during["record"]["paused"] and "Read-only file system" in during["record"]["reason"]
    assert page["record"]["reason"] == during["record"]["reason"] and page["total"] >= stored
    assert during["record"]["events_skipped"] > 0 and during["frames_inferred"] > inferred + 100
    assert any("works again: recording resumed" in ln for ln in out.splitlines())
    assert any(e["start"] >= replugged for e in after["events"])  # kept on the drive plugged back in
    print(f"\nread-only drive: {stored} events before; {len(log_lines)} log line(s) over 20 s read-only, "
          f"{during['record']['events_skipped']} events skipped, {during['record']['write_errors']} write errors; "
          f"resumed after the replug, {after['total']} events listed")
    assert after["total"] >= 2


# --- 9: links planted in the store ---------------------------------------------------------------------


def test_links_planted_in_the_store_are_never_served(tmp_path: Path) -> None:
    root = tmp_path / "events"
    store = fill_store(root, 3)
    one, two, three = (event_id(store, i) for i in (1, 2, 3))
    store.close()
    secret = tmp_path / "secret.txt"
    secret.write_text("root:x:0:0:secret\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (elsewhere / SNAPSHOT).write_text("root:x:0:0:secret\n")
    os.mkfifo(tmp_path / "fifo")
    cfg = record_config(tmp_path, root, extra='labels = ["giraffe"]')
    with DaemonProcess("run", "--config", str(cfg)) as d:
        # planted while the daemon runs: the file a link, the folder a link, a link to a FIFO
        (root / one / CROP).unlink()
        (root / one / CROP).symlink_to(secret)
        os.rename(root / two, tmp_path / "moved")
        (root / two).symlink_to(elsewhere)
        (root / three / SNAPSHOT).unlink()
        (root / three / SNAPSHOT).symlink_to(tmp_path / "fifo")
        codes: dict[str, list[int]] = {}
        for path in (f"/events/{one}/crop.jpg", f"/events/{two}/snapshot.jpg", f"/events/{three}/snapshot.jpg",
                     f"/events/{one}/crop.jpg"):
            codes.setdefault(path, []).append(d.get(path)[0])
        good = d.get(f"/events/{one}/snapshot.jpg")
        d.terminate()
        out = d.output()
    assert codes == {f"/events/{one}/crop.jpg": [404, 404], f"/events/{two}/snapshot.jpg": [404],
                     f"/events/{three}/snapshot.jpg": [404]}
    assert good == (200, JPEG)
    refused = [ln for ln in out.splitlines() if "not served" in ln]
    assert len(refused) == 3, refused  # one warning a planted file, not one a request
    assert secret.read_text() == "root:x:0:0:secret\n" and (elsewhere / SNAPSHOT).exists()
