"""Review items: objects whose events overlap in time on one camera share one item and one clip;
the store lists, pages, filters and deletes them; each object's boxes over time are kept; and
the /events page draws them over the playing clip (in headless Chromium)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import COCO_LABELS, DETECTOR, VTEST, iou
from daemonproc import DaemonProcess
from recordkit import vtest_part
from test_events_page import raw
from edgedetect.storage import review
from edgedetect.storage.ondisk import BOXES, CLIP
from edgedetect.storage.store import EventStore, review_json

JPEG = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()


def grouper(max_s: float = 60.0) -> review.Grouper:
    return review.Grouper(pre_s=2.0, post_s=3.0, max_s=max_s, new_id=lambda t: f"r{t:.3f}-1")


def kinds(steps) -> list[str]:
    return [type(s).__name__ for s in steps]


# --- grouping (pure) ----------------------------------------------------------------------------


def test_overlapping_objects_share_an_item_and_a_later_one_gets_its_own() -> None:
    g = grouper()
    assert kinds(g.started("e1", "person", 10.0)) == ["Open"]
    first = g.item
    assert first.clip_from_t == 8.0
    assert g.started("e2", "person", 12.0) == [] and g.item is first  # overlaps e1
    assert g.ended("e1", 14.0) == []  # e2 still live
    assert kinds(g.ended("e2", 15.0)) == ["Close"]
    assert kinds(g.started("e3", "car", 17.0)) == ["Resume"] and g.item is first  # within the post-roll
    assert kinds(g.ended("e3", 18.0)) == ["Close"]
    assert g.due(20.9) == []
    (finish,) = g.due(21.0)
    assert isinstance(finish, review.Finish) and finish.t == 18.0 and first.objects == ["e1", "e2", "e3"]
    assert kinds(g.started("e4", "person", 30.0)) == ["Open"] and g.item is not first


def test_a_scene_that_never_empties_is_cut_into_pieces_without_a_gap() -> None:
    g = grouper(max_s=10.0)
    g.started("e1", "person", 2.0)  # its clip from 0.0
    g.started("e2", "person", 5.0)
    g.ended("e1", 7.0)
    assert g.due(9.9) == []
    (cut,) = g.due(10.0)
    assert isinstance(cut, review.Cut) and cut.continuing == ("e2",) and cut.t == 10.0
    assert cut.next.clip_from_t == 10.0 and g.item is cut.next  # goes on from the cut
    (cut2,) = g.due(20.0)
    assert isinstance(cut2, review.Cut) and cut2.next.clip_from_t == 20.0


def test_boxes_are_kept_per_object_at_most_ten_a_second() -> None:
    g = grouper()
    g.started("e1", "person", 0.0)
    for i in range(30):  # 30 frames a second for one second
        g.seen(i / 30, [("e1", (0.1 + i / 300, 0.2, 0.3, 0.6)), ("gone", (0, 0, 1, 1))])
    b = review.boxes_json(g.item, lambda t: 1000.0 + t)
    assert b["t0"] == 1000.0 and list(b["objects"]) == ["e1"]
    assert len(b["objects"]["e1"]["t"]) == 10 and b["objects"]["e1"]["label"] == "person"
    assert b["objects"]["e1"]["box"][0] == [0.1, 0.2, 0.3, 0.6]


# --- the store ----------------------------------------------------------------------------------


def begin(store: EventStore, eid: str, review_id: str | None, label: str = "person", zones=()) -> None:
    start = float(eid.split("-")[0])
    store.begin(eid, int(eid.split("-")[1]), label, 0.8, start, start + 1, (0.1, 0.1, 0.2, 0.4), zones, JPEG, JPEG,
                camera="hall", review=review_id)


def test_store_lists_pages_filters_and_deletes_review_items(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "ev")
    for i in range(5):  # five items of two objects each, 100 s apart
        rid = f"r{1000 + 100 * i}.000-{i + 1}"
        store.begin_review(rid, "hall", 1000 + 100 * i)
        begin(store, f"{1000 + 100 * i}.000-{2 * i + 1}", rid, zones=("door",) if i == 2 else ())
        begin(store, f"{1001 + 100 * i}.000-{2 * i + 2}", rid, label="car" if i == 1 else "person")
        store.end_review(rid, 1010 + 100 * i, json.dumps({"t0": 1000 + 100 * i, "objects": {}}).encode())
    page1 = store.query_reviews(limit=2)
    assert [r.id for r in page1] == ["r1400.000-5", "r1300.000-4"]
    page2 = store.query_reviews(limit=2, before=(page1[-1].start, page1[-1].id))
    assert [r.id for r in page2] == ["r1200.000-3", "r1100.000-2"]
    assert [[o.id for o in r.objects] for r in page2] == [["1200.000-5", "1201.000-6"], ["1100.000-3", "1101.000-4"]]
    assert [r.id for r in store.query_reviews(label="car")] == ["r1100.000-2"]
    assert [r.id for r in store.query_reviews(zone="door")] == ["r1200.000-3"]
    assert [r.id for r in store.query_reviews(since=1300)] == ["r1400.000-5", "r1300.000-4"]
    j = review_json(store.get_review("r1100.000-2"))
    assert j["labels"] == ["car", "person"] and j["duration"] == 10 and j["boxes"] == "/reviews/r1100.000-2/boxes.json"
    assert [o["review"] for o in j["objects"]] == ["r1100.000-2"] * 2
    # deleting one object keeps the item; deleting its last takes the item and its folder along
    assert store.delete("1000.000-1") and store.get_review("r1000.000-1") is not None
    assert store.delete("1001.000-2") and store.get_review("r1000.000-1") is None
    assert not (tmp_path / "ev" / "r1000.000-1").exists()
    # deleting an item deletes its objects
    assert store.delete_review("r1200.000-3") and store.get("1200.000-5") is None and store.count() == 6
    assert not (tmp_path / "ev" / "r1200.000-3").exists() and not (tmp_path / "ev" / "1200.000-5").exists()


def test_an_object_cut_into_two_items_belongs_to_both(tmp_path: Path) -> None:
    store = EventStore(tmp_path / "ev")
    store.begin_review("r1000.000-1", "hall", 1000)
    begin(store, "1000.000-1", "r1000.000-1")
    store.begin_review("r1300.000-2", "hall", 1300)
    assert store.join_review("r1300.000-2", "1000.000-1")
    assert store.get("1000.000-1").review == "r1000.000-1"  # the item it started in
    assert [o.id for o in store.get_review("r1300.000-2").objects] == ["1000.000-1"]
    assert store.delete_review("r1000.000-1") and store.get("1000.000-1") is not None  # still in the second
    assert store.delete_review("r1300.000-2") and store.count() == 0


# --- the daemon: shared clips, boxes over playback -------------------------------------------------


def config(tmp: Path, store: Path, extra: str = "", source: Path = VTEST) -> Path:
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
uri = "{source}"
[http]
port = 0
[record]
enabled = true
dir = "{store}"
pre_s = 2
post_s = 2
max_clip_s = 15
{extra}
""")
    return cfg


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """vtest.avi's first 45 s once through (at its 10 fps), recorded; the daemon keeps serving after."""
    tmp = tmp_path_factory.mktemp("reviews")
    store = tmp / "events"
    with DaemonProcess("run", "--config", str(config(tmp, store, source=vtest_part(tmp / "vtest-45s.avi", 450)))) as d:
        d.wait_for(lambda: d.json("/api/stats")["source_state"] == "ended", timeout=150)
        d.wait_for(lambda: all(r["clip"] and r["boxes"] for r in d.json("/api/reviews?limit=1000")["reviews"]),
                   timeout=30)
        yield d, store


@pytest.mark.slow
def test_overlapping_events_share_one_clip_and_no_two_clips_overlap(recorded) -> None:
    d, root = recorded
    items = d.json("/api/reviews?limit=1000")["reviews"]
    events = d.json("/api/events?limit=1000")["events"]
    clips = sorted(root.glob(f"r*/{CLIP}"))
    assert len(clips) == len(items) >= 3  # one clip file per review item
    assert not list(root.glob(f"[0-9]*/{CLIP}"))  # and none per event
    spans = sorted((r["clip_start"], r["clip_end"], r["id"]) for r in items)
    for (s0, e0, a), (s1, e1, b) in zip(spans, spans[1:]):
        assert s1 >= e0 - 0.01, f"{a} ({s0:.2f}-{e0:.2f}) and {b} ({s1:.2f}-{e1:.2f}) cover the same seconds"
    covered = sum(e - s for s, e, _ in spans)
    # events that overlap in time are in one item, and every event names its item and that item's clip
    by_id = {r["id"]: r for r in items}
    for ev in events:
        assert ev["review"] in by_id and ev["clip"] == by_id[ev["review"]]["clip"]
    for a in events:
        for b in events:
            if a["review"] != b["review"] and a["start"] <= b["start"] < a["end"]:
                # b started in a later piece while a was in view: a went on into b's item
                assert a["id"] in {o["id"] for o in by_id[b["review"]]["objects"]}, (a, b)
    event_seconds = sum(e["end"] - e["start"] for e in events)
    longest = max(r["clip_end"] - r["clip_start"] for r in items)
    print(f"\n{len(events)} person events in {len(items)} review items; {len(clips)} clip files covering "
          f"{covered:.1f} s ({sum(c.stat().st_size for c in clips) / 1e6:.1f} MB); events add up to "
          f"{event_seconds:.1f} s; longest clip {longest:.1f} s")
    assert longest <= 15 + 2 + 2.5  # max_clip_s, then the post-roll and the keyframe a clip ends on


def _persons_in(clip: Path, t: float) -> list[tuple[float, ...]]:
    """The real detector's person boxes on the clip's frame shown at `t` s."""
    import av

    from edgedetect.detect.families import load_model
    from edgedetect.detect.model import DetectFilter
    from edgedetect.frames import Frame

    with av.open(str(clip)) as c:
        frame = None
        for f in c.decode(video=0):
            if f.time is not None and f.time > t + 1e-3:
                break
            frame = f
    img = np.array(frame.to_ndarray(format="bgr24"))
    model = load_model(DETECTOR, COCO_LABELS, 1)
    return [d.box for d in model.detect(Frame(0, 0.0, img), DetectFilter(threshold=0.4)).detections
            if d.label == "person"]


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
         "--autoplay-policy=no-user-gesture-required"]


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_events_page_draws_each_objects_box_over_the_playing_clip(recorded, tmp_path: Path) -> None:
    d, root = recorded
    items = d.json("/api/reviews?limit=1000")["reviews"]
    item = max(items, key=lambda r: r["clip_end"] - r["clip_start"])
    seen = []
    for t in (3.0, 8.0):
        r = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=15000",
                            "--dump-dom", d.url(f"/events?play={item['id']}&t={t}")],
                           capture_output=True, text=True, timeout=90)
        body = re.search(r"<body([^>]*)>", r.stdout)
        assert body, r.stderr[-2000:]
        attrs = {k: v.replace("&quot;", '"') for k, v in re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1))}
        assert "video-error" not in attrs and attrs.get("clip") == item["id"], attrs
        overlay = json.loads(attrs["overlay"])
        assert abs(overlay["t"] - t) < 0.2 and overlay["boxes"], overlay
        persons = _persons_in(root / item["id"] / CLIP, overlay["t"])
        matched = [b for b in overlay["boxes"] if max((iou(b["box"], p) for p in persons), default=0) >= 0.5]
        print(f"\nt={overlay['t']}: {len(overlay['boxes'])} boxes drawn, {len(persons)} persons detected in the "
              f"clip's frame, {len(matched)} drawn boxes on a person")
        assert len(matched) >= max(1, len(overlay["boxes"]) // 2)
        seen.append({b["id"]: b["box"] for b in overlay["boxes"]})
    moved = [k for k in seen[0] if k in seen[1] and seen[0][k] != seen[1][k]]
    assert moved or set(seen[0]) != set(seen[1])  # the boxes follow the objects over time
    # the clip is served with ranges, and as a download
    status, body, headers = raw(d, "GET", item["clip"], {"Range": "bytes=0-99"})
    assert status == 206 and len(body) == 100 and headers["Content-Range"].endswith(f"/{(root / item['id'] / CLIP).stat().st_size}")
    status, _, headers = raw(d, "GET", item["clip"] + "?download=1", {"Range": "bytes=999999999-"})
    assert status == 416 and "attachment" in headers.get("Content-Disposition", "")
    status, body, _ = raw(d, "GET", f"/reviews/{item['id']}/{BOXES}")
    assert status == 200 and json.loads(body)["objects"]


def test_events_page_with_recording_off_says_how_to_turn_it_on(tmp_path: Path) -> None:
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text(f'[source]\nuri = "{VTEST}"\nloop = true\n[http]\nport = 0\n')
    with DaemonProcess("run", "--config", str(cfg)) as d:
        status, page, _ = raw(d, "GET", "/events")
        api_status, api, _ = raw(d, "GET", "/api/reviews")
        d.terminate()
    assert status == 200 and b"[record]" in page and b"enabled = true" in page
    assert api_status == 404 and "record" in json.loads(api)["error"]


def test_record_labels_the_model_cannot_produce_warn_once_with_the_fix(tmp_path: Path, caplog) -> None:
    from edgedetect import config
    from edgedetect.storage.record import Recording

    path = tmp_path / "edgedetect.toml"
    path.write_text(f'[record]\nenabled = true\ndir = "{tmp_path / "ev"}"\nlabels = ["person", "persn"]\n')
    rec = Recording(config.load(path))
    caplog.set_level("WARNING", "edgedetect.storage.record")
    rec._check_labels(("person", "bicycle", "car"))
    rec._check_labels(tuple(f"class {i}" for i in range(80)))  # a model without names
    rec._check_labels(("person", "persn"))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2, lines
    assert "'persn' is not among this model's labels" in lines[0] and "bicycle" in lines[0]
    assert "'persn', 'person' are not" in lines[1] and "[model] labels" in lines[1]
