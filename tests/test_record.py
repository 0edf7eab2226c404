"""The event store and the clip recorder: the index, retention, a really full disk, a killed
daemon, and clips from pre_s before an event to post_s after it, on vtest.avi."""

from __future__ import annotations

import os
import signal
import sqlite3
import statistics
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VTEST
from daemonproc import DaemonProcess
from recordkit import fill, record_config, tmpfs
from edgedetect.frames import Frame
from edgedetect.storage.ondisk import CLIP, CROP, SNAPSHOT
from edgedetect.system.files import StorageFull, write_atomic
from edgedetect.storage.store import EventStore, event_json

av = pytest.importorskip("av")

JPEG = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()


def vtest_frames(n: int) -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(VTEST))
    frames = []
    while len(frames) < n:
        ok, img = cap.read()
        assert ok
        frames.append(img)
    cap.release()
    return frames


def listed_files_complete(root: Path) -> tuple[int, int]:
    """Every file the index lists decodes whole; returns (pictures, clips) checked."""
    db = sqlite3.connect(root / "index.sqlite3")
    pictures = clips = 0
    for eid, snap, clip in db.execute("SELECT id, snapshot_bytes, clip_bytes FROM events"):
        folder = root / eid
        if snap:
            for name in (SNAPSHOT, CROP):
                data = (folder / name).read_bytes()
                assert data.endswith(b"\xff\xd9"), f"{eid}/{name} truncated"
                assert cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR) is not None
            assert snap == (folder / SNAPSHOT).stat().st_size + (folder / CROP).stat().st_size
            pictures += 1
        if clip:
            assert clip == (folder / CLIP).stat().st_size
            with av.open(str(folder / CLIP)) as c:
                frames = sum(1 for _ in c.decode(video=0))  # decodes to the end, or raises
            assert frames > 0
            clips += 1
    for rid, folder, clip in db.execute("SELECT id, folder, clip_bytes FROM reviews WHERE clip_bytes > 0"):
        assert folder == rid and clip == (root / rid / CLIP).stat().st_size
        with av.open(str(root / rid / CLIP)) as c:
            assert sum(1 for _ in c.decode(video=0)) > 0  # decodes to the end, or raises
        clips += 1
    db.close()
    return pictures, clips


# --- the store ---------------------------------------------------------------------------------


def add(store: EventStore, eid: str, label: str = "person", zones=(), start: float | None = None,
        size: int = 0) -> None:
    start = float(eid.split("-")[0]) if start is None else start
    store.begin(eid, int(eid.split("-")[1]), label, 0.8, start, start + 1, (0.1, 0.1, 0.2, 0.4), zones,
                JPEG + b"\0" * size, JPEG)


def test_store_query_filters_get_delete(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "ev")
    add(store, "1000.000-1", zones=["door"])
    add(store, "1010.000-2", label="car")
    add(store, "1020.000-3", zones=["door", "path"])
    add(store, "1030.000-4")
    store.update("1030.000-4", 0.95, 1035.0, ["path"], 12, end=1035.0)
    ids = lambda evs: [e.id for e in evs]  # noqa: E731
    assert ids(store.query()) == ["1030.000-4", "1020.000-3", "1010.000-2", "1000.000-1"]  # newest first
    assert ids(store.query(label="car")) == ["1010.000-2"]
    assert ids(store.query(zone="door")) == ["1020.000-3", "1000.000-1"]
    assert ids(store.query(zone="path")) == ["1030.000-4", "1020.000-3"]
    assert ids(store.query(since=1010)) == ["1030.000-4", "1020.000-3", "1010.000-2"]
    assert ids(store.query(limit=1)) == ["1030.000-4"]
    ev = store.get("1030.000-4")
    assert ev is not None and ev.end == 1035.0 and ev.score == 0.95 and ev.frames == 12 and ev.zones == ["path"]
    j = event_json(ev)
    assert {"id", "label", "score", "start", "end", "zones", "snapshot", "clip"} <= set(j)
    assert j["snapshot"] == "/events/1030.000-4/snapshot.jpg" and j["clip"] is None
    assert store.get("1000.000-1").end is None  # still going on
    # files are served only for listed events, by fixed names
    with store.open("1000.000-1", SNAPSHOT) as f:
        assert f.read() == (tmp_path / "ev" / "1000.000-1" / SNAPSHOT).read_bytes()
    assert store.open("1000.000-1", CLIP) is None  # no clip yet
    assert store.open("1000.000-1", "index.sqlite3") is None
    assert store.open("../ev", SNAPSHOT) is None and store.get("1000.000-1/..") is None
    with pytest.raises(ValueError):
        store.folder("../../etc")
    assert store.delete("1010.000-2") and not (tmp_path / "ev" / "1010.000-2").exists()
    assert not store.delete("1010.000-2") and not store.delete("../x")
    assert store.count() == 3


def test_retention_deletes_oldest_first(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "ev")
    for i in range(10):
        add(store, f"{1000 + i * 10}.000-{i + 1}", size=100_000)
    per_event = store.get("1000.000-1").bytes
    total = store.total_bytes()
    store.max_bytes = total - 3.5 * per_event  # room for all but 4 of them
    deleted = store.enforce(now_wall=2000, live=["1000.000-1"])  # a live event is never deleted
    left = sorted(e.id for e in store.query())
    print(f"\nretention by size: {per_event} B an event, {total} B in 10 -> limit {store.max_bytes:.0f} B: "
          f"deleted {deleted}, kept {len(left)}, store {store.total_bytes()} B")
    assert deleted == 4 and store.total_bytes() <= store.max_bytes
    assert left == ["1000.000-1"] + [f"{1000 + i * 10}.000-{i + 1}" for i in range(5, 10)]
    for eid in ("1010.000-2", "1020.000-3", "1030.000-4", "1040.000-5"):
        assert not (tmp_path / "ev" / eid).exists()
    # by age: everything that started more than max_days ago goes, oldest first
    store.max_bytes = float("inf")
    store.max_age_s = 2 * 86400
    now = 1065 + 2 * 86400  # 1070 and later are younger than two days then
    assert store.enforce(now_wall=now) == 3  # 1000, 1050, 1060
    assert sorted(e.id for e in store.query()) == ["1070.000-8", "1080.000-9", "1090.000-10"]
    assert store.deleted == 7


def test_recovery_after_a_kill(tmp_path: Path) -> None:
    root = tmp_path / "ev"
    store = EventStore(root)
    add(store, "1000.000-1")
    add(store, "1001.000-2")
    store.update("1001.000-2", 0.9, 1004.0, [], 30)  # seen until 1004, still live at the kill
    (root / "1001.000-2" / ".clip.mp4.tmp").write_bytes(b"half a clip")  # the recorder was writing
    (root / "1002.000-3").mkdir()  # a folder whose event.json and row never committed
    (root / "1002.000-3" / SNAPSHOT).write_bytes(JPEG)
    (root / "1000.000-1" / CROP).unlink()  # a file lost (power cut before its rename was on disk)
    del store  # no close: as after SIGKILL
    again = EventStore(root)
    assert again.recovered == {"closed": 2, "removed_files": 2, "fixed": 1, "reindexed": 0}
    assert again.get("1001.000-2").end == 1004.0  # closed at its last sighting
    assert again.get("1000.000-1").snapshot_bytes == 0 and again.open("1000.000-1", SNAPSHOT) is None
    assert not (root / "1002.000-3").exists() and not (root / "1001.000-2" / ".clip.mp4.tmp").exists()


def test_full_disk_lists_nothing_half_written(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "small", "512k") as small:
        store = EventStore(small / "ev")
        add(store, "1000.000-1")
        filler = fill(small)
        noise = np.random.default_rng(1).integers(0, 256, (300, 300, 3), np.uint8)
        big = cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        assert len(big) > 100_000
        with pytest.raises(StorageFull):
            write_atomic(small / "ev" / "x.jpg", big)
        assert not list(small.rglob("*.tmp")) and not (small / "ev" / "x.jpg").exists()
        with pytest.raises(StorageFull):
            store.begin("1001.000-2", 2, "person", 0.9, 1001, 1001, (0, 0, 1, 1), [], big, big)
        assert [e.id for e in store.query()] == ["1000.000-1"] and not (small / "ev" / "1001.000-2").exists()
        with pytest.raises(StorageFull):  # new pictures for a live event: the old ones stay, whole
            store.update("1000.000-1", 0.99, 1002, [], 5, snapshot=big, crop=big)
        assert listed_files_complete(small / "ev") == (1, 0)
        filler.unlink()
        store.begin("1001.000-2", 2, "person", 0.9, 1001, 1001, (0, 0, 1, 1), [], big, JPEG)
        assert listed_files_complete(small / "ev") == (2, 0)


# --- the clip recorder ----------------------------------------------------------------------


def test_clip_covers_pre_and_post_at_the_camera_rate(tmp_path: Path) -> None:
    """Synthetic capture times (10 fps): the event from 8.0 to 12.0 s, pre 5 s, post 5 s."""
    from edgedetect.storage.recorder import ClipRecorder

    done = []
    rec = ClipRecorder(5.0, 5.0, 300.0, lambda *a: done.append(a))
    imgs = vtest_frames(50)
    t0 = 1000.0
    for i in range(200):
        t = t0 + i / 10
        if i == 82:  # the event starts (first seen at 8.0 s) after 3 frames
            rec.begin("e1", t0 + 8.0, tmp_path / "e1.mp4")
        if i == 130:  # ended after max_missing frames: last seen 12.0 s
            rec.end("e1", t0 + 12.0)
        rec._commands()
        rec._encode(Frame(i, t, imgs[i % 50]))
    assert len(done) == 1
    eid, path, c0, c1, err = done[0]
    assert err is None and path == tmp_path / "e1.mp4"
    pre, post = t0 + 8.0 - c0, c1 - (t0 + 12.0)
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        frames = [p for p in c.demux(s) if p.size]
        duration = float(frames[-1].pts * frames[-1].time_base) + 0.1
        assert (s.codec_context.name, s.width, s.height) == ("h264", 768, 576)
        assert c.format.name.startswith("mov,mp4")
    with av.open(str(path)) as c:
        assert len(list(c.decode(video=0))) >= len(frames) - 1  # it decodes
    print(f"\nclip: pre {pre:.2f} s (wanted 5), post {post:.2f} s (wanted 5), {len(frames)} frames, {duration:.2f} s")
    assert pre == pytest.approx(5.0, abs=0.01)  # keyframes every second on the capture clock: 3.0 s is one
    assert post == pytest.approx(5.1, abs=0.01)  # up to and including the frame at 17.0 s
    assert len(frames) == 141 and duration == pytest.approx(14.1, abs=0.01)  # every captured frame
    assert rec.figures.preroll_bytes < 2_000_000


def test_preroll_is_bounded_in_bytes() -> None:
    from edgedetect.storage.recorder import ClipRecorder

    rec = ClipRecorder(30.0, 5.0, 300.0, lambda *a: None, max_preroll_bytes=200_000)
    imgs = vtest_frames(60)
    for i in range(120):
        rec._encode(Frame(i, 1000 + i / 10, imgs[i % 60]))
        assert rec._ring_bytes <= 200_000 + 120_000  # the cap plus at most one second being built
    assert rec._ring[0].key and rec._ring_bytes <= 320_000


# --- the daemon --------------------------------------------------------------------------------

@pytest.mark.slow
def test_vtest_events_zones_snapshots_clips(tmp_path: Path) -> None:
    """40 s of vtest at its 10 fps with a zone over the lower left of the hall."""
    store = tmp_path / "events"
    cfg = record_config(tmp_path, store)
    with DaemonProcess("run", "--config", str(cfg)) as d:
        time.sleep(40)
        stats = d.json("/api/stats")["record"]
        code, _ = d.terminate()
    assert code == 0
    events = sorted(EventStore(store).query(limit=1000), key=lambda e: e.start)
    assert len(events) >= 10 and stats["events_stored"] >= 10 and stats["frames_dropped"] == 0
    assert all(e.label == "person" and e.end is not None for e in events)
    assert listed_files_complete(store)[0] == len(events)
    first_frame = min(e.start for e in events)  # about when the video started
    in_front = [e for e in events if "front" in e.zones]
    assert in_front and len(in_front) < len(events)  # the zone holds some of the people, not all
    for e in events:
        assert set(e.zones) <= {"front"}
        snap = cv2.imread(str(store / e.id / SNAPSHOT))
        crop = cv2.imread(str(store / e.id / CROP))
        assert snap.shape == (576, 768, 3) and 160 <= crop.shape[0] <= 576
    rows = []
    stop_t = max(e.end for e in events)
    items = sorted(EventStore(store).query_reviews(limit=1000), key=lambda r: r.start)
    assert sorted(o.id for r in items for o in r.objects) == sorted(e.id for e in events)
    for r in items:
        if not r.clip_bytes:
            assert r.end is None or r.end > stop_t - 6, r  # only an item still in its post-roll at the stop
            continue
        with av.open(str(store / r.id / CLIP)) as c:
            s = c.streams.video[0]
            frames = [p for p in c.demux(s) if p.size]
        span = float(frames[-1].pts * frames[-1].time_base)
        first = min(o.start for o in r.objects)
        pre, post = first - r.clip_start, r.clip_end - r.end
        rate = (len(frames) - 1) / span
        rows.append((r.id, len(r.objects), r.end - first, pre, post, r.clip_end - r.clip_start, len(frames), rate))
        want_pre = min(5.0, first - first_frame)
        assert want_pre - 0.35 <= pre <= 5.0 + 1.15, (r.id, pre)  # keyframes every second
        if r.end < stop_t - 6:  # not cut by the stop
            assert 4.9 <= post <= 5.25, (r.id, post)
        assert 9.0 <= rate <= 10.5  # the camera's rate, not the inference rate
        assert abs((span + 0.1) - (r.clip_end - r.clip_start)) < 0.25
    print("\nreview item         objects  item_s  pre_s  post_s  clip_s frames  fps")
    for r in rows:
        print(f"{r[0]:19} {r[1]:7d} {r[2]:7.1f} {r[3]:6.2f} {r[4]:7.2f} {r[5]:7.2f} {r[6]:6d} {r[7]:4.1f}")
    clip_bytes = sum(r.clip_bytes for r in items)
    print(f"{len(events)} events ({len(in_front)} in 'front') in {len(items)} review items, {len(rows)} clips: "
          f"snapshots {statistics.mean(e.snapshot_bytes for e in events) / 1e3:.0f} kB an event, clips "
          f"{clip_bytes / 1e6:.2f} MB for {sum(r[5] for r in rows):.1f} s; written in all {stats['mb_written']} MB; "
          f"recorder {stats['encode_ms_mean']} ms a frame")
    assert rows


@pytest.mark.slow
def test_nothing_written_while_nothing_happens(tmp_path: Path) -> None:
    store = tmp_path / "events"
    cfg = record_config(tmp_path, store, extra='labels = ["giraffe"]', loop=True)
    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 10)
        time.sleep(1)
        before = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*")}
        time.sleep(4)
        after = {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in store.rglob("*")}
        st = d.json("/api/stats")
    assert before == after and st["record"]["events_stored"] == 0 and st["frames_inferred"] > 40
    assert {p.name for p in before} <= {".edgedetect-store", "index.sqlite3", "index.sqlite3-wal", "index.sqlite3-shm"}


@pytest.mark.slow
def test_index_survives_sigkill_and_restart(tmp_path: Path) -> None:
    store = tmp_path / "events"
    cfg = record_config(tmp_path, store, extra="max_clip_s = 6")  # a busy hall: cut into 6 s items
    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["record"]["clips_written"] >= 2, timeout=40)
        listed = {e["id"]: e for e in d.json("/api/events?limit=1000")["events"]}
        os.kill(d.proc.pid, signal.SIGKILL)
        d.proc.wait(5)
    assert len(listed) >= 3 and any(e["end"] is None for e in listed.values())  # some were live
    leftovers = [p.name for p in store.rglob("*.tmp")]  # clips being written when it died
    with DaemonProcess("run", "--config", str(record_config(tmp_path, store, extra='labels = ["giraffe"]'))) as d2:
        after = {e["id"]: e for e in d2.json("/api/events?limit=1000")["events"]}
        out = d2.output()
        d2.terminate()
    assert set(listed) <= set(after)  # every event the killed daemon had committed is still there
    assert all(e["end"] is not None for e in after.values())  # open ones closed at their last sighting
    for eid, e in listed.items():
        if e["clip"]:
            assert after[eid]["clip"] == e["clip"]
    assert all(e["review"] for e in after.values())  # every event in a review item
    assert not list(store.rglob("*.tmp"))
    pictures, clips = listed_files_complete(store)
    assert pictures == len(after)
    print(f"\nSIGKILL with {len(listed)} events listed ({sum(e['end'] is None for e in listed.values())} live, "
          f"{len(leftovers)} clip(s) half-written); after restart {len(after)} listed, {clips} clips, "
          f"recovery: {[ln for ln in out.splitlines() if 'recovered' in ln]}")


@pytest.mark.slow
def test_full_disk_pauses_then_resumes_by_itself(tmp_path: Path) -> None:
    """A real 16 MB file system, 11 MB of it taken: recording pauses below min_free_mb = 2 with
    one warning, detection goes on, and recording resumes once the 11 MB are freed."""
    with tmpfs(tmp_path / "small", "16m") as small:
        filler = small / "filler"
        filler.write_bytes(b"\0" * 11_000_000)
        store = small / "events"
        cfg = record_config(tmp_path, store, extra="min_free_mb = 2\npre_s = 2\npost_s = 1", loop=True)
        with DaemonProcess("run", "--config", str(cfg)) as d:
            rec = lambda: d.json("/api/stats")["record"]  # noqa: E731
            d.wait_for(lambda: rec()["paused"], timeout=90)
            t_pause = time.monotonic()
            at_pause = rec()
            inferred = d.json("/api/stats")["frames_inferred"]
            d.wait_for(lambda: rec()["events_skipped"] > at_pause["events_skipped"], timeout=60)
            during = d.json("/api/stats")
            fps = (during["frames_inferred"] - inferred) / (time.monotonic() - t_pause)
            assert during["record"]["paused"] and during["record"]["events_skipped"] > at_pause["events_skipped"]
            listed_paused = d.json("/api/events?limit=1000")["total"]
            filler.unlink()
            d.wait_for(lambda: not rec()["paused"], timeout=15)
            d.wait_for(lambda: rec()["events_stored"] > at_pause["events_stored"] + 2, timeout=30)
            after = rec()
            health = d.get("/healthz")[0]
            code, _ = d.terminate()
            out = d.output()
        assert code == 0 and health == 200
        assert fps > 5  # detection never waited for the disk (vtest: 10 fps; a busy 2-core machine)
        warnings = [ln for ln in out.splitlines() if "recording paused" in ln]
        assert len(warnings) == after["pauses"] == 1, warnings
        assert any("recording resumed" in ln for ln in out.splitlines())
        assert not list(store.rglob("*.tmp"))
        pictures, clips = listed_files_complete(store)
        print(f"\nfull disk: paused at {at_pause['free_mb']} MB free after {at_pause['events_stored']} events "
              f"({at_pause['mb_written']} MB written, {at_pause['clips_failed']} clip(s) abandoned); "
              f"{during['record']['events_skipped']} events skipped while paused, inference {fps:.1f} fps; "
              f"resumed: {after['events_stored']} stored; {listed_paused} listed at the pause; index lists "
              f"{pictures} events, {clips} clips, all whole")
        assert pictures >= after["events_stored"] - after["deleted"] - 1


def _inference_fps(cfg: Path, window: float = 12.0) -> tuple[float, float, dict]:
    """(inference fps, process CPU %) over `window` s after a warm-up, and the last stats."""
    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 20)
        time.sleep(2)
        a, t0 = d.json("/api/stats"), time.monotonic()
        cpu0 = _cpu(d.proc.pid)
        time.sleep(window)
        b, t1 = d.json("/api/stats"), time.monotonic()
        cpu1 = _cpu(d.proc.pid)
        d.terminate()
    return (b["frames_inferred"] - a["frames_inferred"]) / (t1 - t0), 100 * (cpu1 - cpu0) / (t1 - t0), b


def _cpu(pid: int) -> float:
    """User + system CPU seconds of a process so far."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.mark.slow
def test_recorder_cost_on_inference_rate(tmp_path: Path) -> None:
    """vtest as fast as inference goes (pace = false: every frame is inferred, and the recorder
    encodes every one of them too), with and without [record] clips, interleaved A B A B so
    that a busy machine weighs on both alike. The encoder runs on its own thread and keeps up
    (no frame dropped) at a fraction of an inference's time. On these 2 cores the encoder and the
    two inference threads share the CPU, so the inference rate drops by its share (3-8 % measured,
    on a loaded machine more); a Pi 4 has two cores more than inference uses."""
    plain = record_config(tmp_path, tmp_path / "off", pace=False, loop=True).read_text().replace(
        "enabled = true", "enabled = false")
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "edgedetect.toml").write_text(plain)
    (tmp_path / "b").mkdir()
    recording = record_config(tmp_path / "b", tmp_path / "b" / "events", pace=False, loop=True,
                              extra="max_clip_s = 5")
    runs: dict[str, list[tuple[float, float]]] = {"off": [], "on": []}
    last = {}
    for _ in range(2):
        for name, cfg in (("off", tmp_path / "a" / "edgedetect.toml"), ("on", recording)):
            fps, cpu, stats = _inference_fps(cfg, window=8.0)
            runs[name].append((fps, cpu))
            last[name] = stats
    off = statistics.mean(f for f, _ in runs["off"])
    on = statistics.mean(f for f, _ in runs["on"])
    cpu_off = statistics.mean(c for _, c in runs["off"])
    cpu_on = statistics.mean(c for _, c in runs["on"])
    rec = last["on"]["record"]
    print(f"\ninference fps without recording {[round(f, 1) for f, _ in runs['off']]} -> {off:.2f}, with "
          f"{[round(f, 1) for f, _ in runs['on']]} -> {on:.2f}: {100 * (on / off - 1):+.1f}%; process CPU "
          f"{cpu_off:.0f}% -> {cpu_on:.0f}%; encoder {rec['encode_ms_mean']} ms a frame, "
          f"{rec['clips_written']} clips, {rec['frames_dropped']} frames dropped by the recorder")
    assert "record" not in last["off"] and rec["clips_written"] >= 1 and rec["frames_dropped"] == 0
    assert rec["encode_ms_mean"] <= 0.25 * last["on"]["inference_ms"]["p50"], (rec, last["on"]["inference_ms"])
    assert on >= 0.8 * off


def test_unusable_dir_is_one_line_and_detection_goes_on(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    cfg = record_config(tmp_path, blocker / "events")
    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 5)
        rec = d.json("/api/events")["record"]
        health = d.get("/healthz")[0]
        code, _ = d.terminate()
        out = d.output()
    warnings = [ln for ln in out.splitlines() if "WARNING" in ln and "record" in ln]
    assert code == 0 and health == 200 and "Traceback" not in out
    assert len(warnings) == 1 and f"record.dir: cannot keep events in {blocker / 'events'}" in warnings[0], out
    assert rec["paused"] and "Not a directory" in rec["reason"]
