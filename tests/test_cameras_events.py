"""Events of several cameras: each camera's results go to its own tracker (its zones, its labels),
its frames to its own clip pre-roll, its events to its own MQTT topics and Home Assistant device,
and the store names the camera of each event. Camera b is vtest.avi at half size, so a picture
or a clip cut from the wrong camera's frames shows at once in its size."""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import VTEST
from recordkit import vtest_part
from daemonproc import DaemonProcess
from edgedetect import config
from edgedetect.config import CameraConfig, Config, ZoneConfig
from edgedetect.detect.model import DetectFilter
from edgedetect.extensions import EXTENSIONS
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.sinks.events import EventsExtension, attach
from edgedetect.sources.video import VideoFile
from edgedetect.storage import ondisk
from edgedetect.storage.ondisk import CLIP, META, SNAPSHOT
from edgedetect.storage.record import Recording
from edgedetect.storage.store import EventStore
from fakehooks import make_hooks
from mosquitto import MOSQUITTO, Broker, Recorder

av = pytest.importorskip("av")

DEVICE = "pi-two"
BASE = f"edgedetect/{DEVICE}"
WALKWAY = [[0.55, 0.15], [1.0, 0.15], [1.0, 0.8], [0.55, 0.8]]  # the right of the hall, where people walk
SIZES = {"a": (576, 768), "b": (288, 384)}  # (height, width) of each camera's frames
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
JPEG = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))[1].tobytes()


def half_size_copy(tmp: Path, frames: int = 400) -> Path:
    """The first `frames` frames of vtest.avi at half its size (MJPEG in AVI)."""
    h, w = SIZES["b"]
    return vtest_part(tmp / "vtest-half.avi", frames, (w, h))


def two_cameras(tmp: Path, small: Path, clips: bool = True) -> str:
    return f"""
[record]
enabled = true
dir = "{tmp / 'events'}"
pre_s = 1
post_s = 1
max_clip_s = 5
max_width = 0
clips = {str(clips).lower()}
[cameras.a]
uri = "{VTEST}"
[[cameras.a.zones]]
name = "walkway"
polygon = {json.dumps(WALKWAY)}
[cameras.b]
uri = "{small}"
"""


def connections_to(pid: int, port: int) -> int:
    """The process's established TCP connections to `port` on loopback, from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[2].rsplit(":", 1)[1], 16) == port and fields[3] == "01":
                inodes.add(fields[9])
    fds = Path(f"/proc/{pid}/fd")
    return sum(1 for fd in fds.iterdir() if fd.readlink().name in {f"socket:[{i}]" for i in inodes})


def shape_of_clip(path: Path) -> tuple[int, int]:
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        return s.codec_context.height, s.codec_context.width


# --- without a daemon ---------------------------------------------------------------------------


@pytest.mark.slow
def test_each_camera_has_its_own_tracker_scene_and_pictures(tmp_path: Path, detector) -> None:
    """Two unpaced cameras on one real detector, the events extension on its results: both
    cameras' people make events of their own (one shared tracker would take b's people for a's,
    as both watch the same hall), numbered from one counter, each with its camera, its zones
    and a snapshot of its own frames."""
    path = tmp_path / "c.toml"
    path.write_text(two_cameras(tmp_path, half_size_copy(tmp_path, 200), clips=False))
    cfg = config.load(path)
    specs = []
    for name, cam_cfg in config.camera_configs(cfg):
        src = VideoFile(cam_cfg.source.uri, pace=False, loop=True)
        src.open()
        specs.append(CameraSpec(name, lambda u=cam_cfg.source.uri: VideoFile(u, pace=False, loop=True), src))
    p = Pipeline(detector, specs, PipelineOptions(DetectFilter(threshold=0.5), report_sinks=()))
    recording = Recording(cfg)
    ext = EventsExtension(cfg, DEVICE, p.snapshot, recording=recording)
    seen: list[str] = []
    p.add_result_listener(ext.on_result)
    p.add_result_listener(lambda r: seen.append(r.camera))
    ext.start()
    p.start()
    deadline = time.monotonic() + 120
    while len(seen) < 300 and time.monotonic() < deadline:
        time.sleep(0.1)
    p.stop()
    p.join(3)
    ext.stop()
    ext.join(3)
    store = EventStore(tmp_path / "events")
    events = store.query(limit=1000)
    by_camera = {name: store.query(camera=name, limit=1000) for name in ("a", "b")}
    assert len(by_camera["a"]) >= 3 and len(by_camera["b"]) >= 3, {k: len(v) for k, v in by_camera.items()}
    assert len(by_camera["a"]) + len(by_camera["b"]) == len(events)
    assert len({e.id for e in events}) == len({e.seq for e in events}) == len(events)  # one counter
    assert any("walkway" in e.zones for e in by_camera["a"]) and all(e.zones == [] for e in by_camera["b"])
    for name, evs in by_camera.items():
        for e in evs:
            assert e.camera == name
            assert cv2.imread(str(tmp_path / "events" / e.id / SNAPSHOT)).shape[:2] == SIZES[name], (name, e.id)
    print(f"\n{len(by_camera['a'])} events of a, {len(by_camera['b'])} of b, numbers "
          f"{sorted(e.seq for e in events)}")


def test_ids_that_meet_across_cameras_turn_mqtt_off(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """Camera 'a' counting zone 'x' and camera 'a_zone_x' counting persons would share one Home
    Assistant id; the check looks at every camera's names together."""
    square = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
    cfg = Config()
    cfg.mqtt.enabled, cfg.mqtt.device = True, "pi"
    cfg.cameras = {"a": CameraConfig(uri=str(VTEST), zones=[ZoneConfig("x", square)]),
                   "a_zone_x": CameraConfig(uri=str(VTEST))}
    hooks, reg = make_hooks(cfg)
    with caplog.at_level("ERROR", logger="edgedetect.sinks.events"):
        ext = attach(hooks)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= 40]
    assert lines == ["mqtt: camera 'a' zone 'x' label 'person' and camera 'a_zone_x' label 'person' would both "
                     "be Home Assistant id edgedetect_pi_a_zone_x_person_count; expected a topic and an id of its "
                     "own for each; MQTT stays off"]
    assert ext is None and reg.results == []


def test_a_camera_may_record_alone(tmp_path: Path) -> None:
    """[cameras.b.record] enabled = true with [record] off: b's events are kept, a's not tracked."""
    path = tmp_path / "c.toml"
    path.write_text(f"""
[record]
dir = "{tmp_path / 'events'}"
[cameras.a]
uri = "{VTEST}"
[cameras.b]
uri = "{VTEST}"
[cameras.b.record]
enabled = true
labels = ["person", "dog"]
""")
    cfg = config.load(path)
    assert not cfg.record.enabled
    assert next(r for r in EXTENSIONS if r.module == "edgedetect.sinks.events").wanted(cfg)
    hooks, reg = make_hooks(cfg)
    ext = attach(hooks)
    assert ext is not None and ext.mqtt is None and list(ext.followers) == ["b"]
    assert ext.recording.wants("b", "dog") and not ext.recording.wants("b", "car")
    assert not ext.recording.wants("a", "person")
    assert "/api/events" in reg.routes and reg.frames == [ext.recording.on_frame]


OLD_SCHEMA = """
CREATE TABLE events (id TEXT PRIMARY KEY, seq INTEGER NOT NULL, label TEXT NOT NULL, score REAL NOT NULL,
    start REAL NOT NULL, last REAL NOT NULL, "end" REAL, frames INTEGER NOT NULL DEFAULT 0,
    box TEXT NOT NULL DEFAULT '[]', snapshot_bytes INTEGER NOT NULL DEFAULT 0, clip_bytes INTEGER NOT NULL DEFAULT 0,
    clip_start REAL, clip_end REAL);
CREATE INDEX events_start ON events (start);
CREATE TABLE event_zones (id TEXT NOT NULL REFERENCES events (id) ON DELETE CASCADE, zone TEXT NOT NULL,
    PRIMARY KEY (id, zone)) WITHOUT ROWID;
"""


def test_a_store_without_cameras_gets_the_column_and_a_rebuild_keeps_each_camera(tmp_path: Path) -> None:
    """An index and an event.json that name no camera (as a one-camera daemon's store has them)
    open as they are; new events keep their camera in the index and in event.json, from which a
    rebuilt index has it again."""
    root = tmp_path / "events"
    root.mkdir()
    (root / ondisk.MARKER).write_text("edgedetect event store\n")
    old_id = "1000.000-1"
    (root / old_id).mkdir()
    for name in (SNAPSHOT, ondisk.CROP):
        (root / old_id / name).write_bytes(JPEG)
    meta = {"id": old_id, "seq": 1, "label": "person", "score": 0.8, "start": 1000.0, "last": 1001.0, "end": 1001.0,
            "frames": 5, "box": [0.1, 0.1, 0.2, 0.4], "zones": ["door"], "clip_start": None, "clip_end": None}
    (root / old_id / META).write_text(json.dumps(meta))
    db = sqlite3.connect(root / ondisk.INDEX)
    db.executescript(OLD_SCHEMA)
    db.execute("INSERT INTO events (id, seq, label, score, start, last, \"end\", frames, box, snapshot_bytes) "
               "VALUES (?, 1, 'person', 0.8, 1000, 1001, 1001, 5, '[0.1, 0.1, 0.2, 0.4]', ?)", (old_id, 2 * len(JPEG)))
    db.execute("INSERT INTO event_zones VALUES (?, 'door')", (old_id,))
    db.commit()
    db.close()

    store = EventStore(root)
    assert [(e.id, e.camera, e.zones) for e in store.query()] == [(old_id, "", ["door"])]
    store.begin("1010.000-2", 2, "person", 0.9, 1010, 1011, (0, 0, 1, 1), (), JPEG, JPEG, 3, camera="a")
    store.begin("1020.000-3", 3, "car", 0.7, 1020, 1021, (0, 0, 1, 1), (), JPEG, JPEG, 3, camera="b")
    assert [e.id for e in store.query(camera="a")] == ["1010.000-2"]
    assert [e.id for e in store.query(camera="b", label="car")] == ["1020.000-3"]
    assert json.loads((root / "1010.000-2" / META).read_text())["camera"] == "a"
    store.close()
    for name in ondisk.INDEX_FILES:
        (root / name).unlink(missing_ok=True)
    again = EventStore(root)  # the index rebuilt from the folders
    assert {e.id: e.camera for e in again.query()} == {old_id: "", "1010.000-2": "a", "1020.000-3": "b"}
    again.close()


# --- the daemon with two cameras, MQTT and [record] ----------------------------------------------


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    """One daemon run: what the broker got, what the API listed, the page's DOM and the store."""
    if not MOSQUITTO.exists():
        pytest.skip("mosquitto not installed (apt install mosquitto)")
    tmp = tmp_path_factory.mktemp("two")
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
pace = true
loop = true
[http]
port = 0
[stats]
interval = 1.0
[mqtt]
enabled = true
host = "127.0.0.1"
port = PORT
device = "{DEVICE}"
""" + two_cameras(tmp, half_size_copy(tmp)))
    with Broker(tmp / "broker") as broker, Recorder(broker.port) as rec:
        cfg.write_text(cfg.read_text().replace("PORT", str(broker.port)))
        with DaemonProcess("run", "--config", str(cfg)) as d:
            def ended(cam: str) -> int:
                return sum(b'"end"' in m.payload for m in rec.on(f"{BASE}/{cam}/events"))

            rec.wait(lambda ms: ended("a") >= 3 and ended("b") >= 3, timeout=120)

            def clipped(cam: str) -> list[dict]:
                return [e for e in d.json(f"/api/events?camera={cam}&limit=1000")["events"] if e["clip"]]

            d.wait_for(lambda: len(clipped("a")) >= 2 and len(clipped("b")) >= 2, timeout=60)
            api = {q: d.json(f"/api/events{q}") for q in ("?limit=1000", "?camera=a&limit=1000",
                                                            "?camera=b&limit=1000")}
            files = {}
            for e in api["?limit=1000"]["events"]:
                for key in ("snapshot", "clip"):
                    if e[key]:
                        files[e[key]] = d.get(e[key])
            dom = ""
            if CHROMIUM:
                dom = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
                                      f"--user-data-dir={tmp / 'profile'}", "--virtual-time-budget=5000",
                                      "--dump-dom", d.url("/events")],
                                     capture_output=True, text=True, timeout=90).stdout
            connections = connections_to(d.proc.pid, broker.port)
            code, _ = d.terminate()
        time.sleep(0.3)
    yield SimpleNamespace(rec=rec, api=api, files=files, dom=dom, code=code, out=d.output(), tmp=tmp,
                          connections=connections)


def events_on(two, topic: str) -> list[dict]:
    return [json.loads(m.payload) for m in two.rec.on(topic)]


@pytest.mark.slow
def test_each_camera_publishes_under_its_own_topics(two) -> None:
    assert two.code == 0 and "Traceback" not in two.out
    topics = {m.topic for m in two.rec.messages if m.topic.startswith("edgedetect/")}
    assert f"{BASE}/events" not in topics and f"{BASE}/count/person" not in topics
    assert {t for t in topics if t.endswith("/availability")} == {f"{BASE}/availability"}
    assert [m.payload for m in two.rec.on(f"{BASE}/availability")][-1] == b"offline"
    assert two.rec.on(f"{BASE}/stats")
    assert two.connections == 1  # one MQTT connection for both cameras
    starts = []
    for cam in ("a", "b"):
        evs = events_on(two, f"{BASE}/{cam}/events")
        assert evs and all(e["camera"] == cam and e["device"] == DEVICE for e in evs)
        h, w = SIZES[cam]
        assert all(e["frame_size"] == [w, h] for e in evs), cam  # the camera's own frames
        assert all(e["id"].endswith(f"-{e['seq']}") for e in evs)
        starts += [e for e in evs if e["type"] == "start"]
        assert any(int(m.payload) > 0 for m in two.rec.on(f"{BASE}/{cam}/count/person"))
        assert two.rec.on(f"{BASE}/{cam}/snapshot/person")
    # ids and numbers unique across the cameras
    assert len({e["id"] for e in starts}) == len({e["seq"] for e in starts}) == len(starts)
    # zones are a's: its events name them and it has the zone counts; b has neither
    assert any("walkway" in e["zones"] for e in events_on(two, f"{BASE}/a/events"))
    assert all(e["zones"] == [] for e in events_on(two, f"{BASE}/b/events"))
    assert max(int(m.payload) for m in two.rec.on(f"{BASE}/a/zone/walkway/person")) >= 1
    assert not [t for t in topics if t.startswith(f"{BASE}/b/zone/")]
    print(f"\n{len(starts)} events: a {sum(e['camera'] == 'a' for e in starts)}, "
          f"b {sum(e['camera'] == 'b' for e in starts)}; {len(topics)} topics")


@pytest.mark.slow
def test_home_assistant_has_a_device_per_camera(two) -> None:
    discovery = {m.topic: json.loads(m.payload) for m in two.rec.messages if m.topic.startswith("homeassistant/")}
    devices = {c["device"]["identifiers"][0]: c["device"] for c in discovery.values()}
    host = f"edgedetect_{DEVICE}"
    assert set(devices) == {host, f"{host}_a", f"{host}_b"}
    for cam in ("a", "b"):
        dev = devices[f"{host}_{cam}"]
        assert dev["name"] == f"{DEVICE} {cam}" and dev["via_device"] == host
        c = discovery[f"homeassistant/sensor/{host}_{cam}/person_count/config"]
        assert c["state_topic"] == f"{BASE}/{cam}/count/person" and c["unique_id"] == f"{host}_{cam}_person_count"
        assert c["availability_topic"] == f"{BASE}/availability"
        occupancy = discovery[f"homeassistant/binary_sensor/{host}_{cam}/person_occupancy/config"]
        assert occupancy["device"]["identifiers"] == [f"{host}_{cam}"]
    zone = discovery[f"homeassistant/sensor/{host}_a/zone_walkway_person_count/config"]
    assert zone["state_topic"] == f"{BASE}/a/zone/walkway/person" and zone["device"]["identifiers"] == [f"{host}_a"]
    assert not [t for t in discovery if t.startswith(f"homeassistant/sensor/{host}_b/zone_")]
    figures = discovery[f"homeassistant/sensor/{host}/inference_fps/config"]
    assert figures["device"]["identifiers"] == [host] and "via_device" not in figures["device"]
    assert len({c["unique_id"] for c in discovery.values()}) == len(discovery)


@pytest.mark.slow
def test_the_store_and_the_api_name_each_events_camera(two) -> None:
    everything = two.api["?limit=1000"]
    assert everything["cameras"] == ["a", "b"] and everything["zones"] == ["walkway"]
    listed = {e["id"]: e for e in everything["events"]}
    only = {cam: two.api[f"?camera={cam}&limit=1000"]["events"] for cam in ("a", "b")}
    for cam, evs in only.items():
        assert evs and all(e["camera"] == cam for e in evs)
    assert {e["id"] for e in only["a"]} | {e["id"] for e in only["b"]} == set(listed)
    assert not {e["id"] for e in only["a"]} & {e["id"] for e in only["b"]}
    # the MQTT starts are the stored events, under the same id and camera
    for cam in ("a", "b"):
        for e in events_on(two, f"{BASE}/{cam}/events"):
            if e["type"] == "start" and e["id"] in listed:
                assert listed[e["id"]]["camera"] == cam
    # each listed snapshot and clip is served, cut from its own camera's frames
    for e in everything["events"]:
        status, jpg = two.files[e["snapshot"]]
        assert status == 200
        assert cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR).shape[:2] == SIZES[e["camera"]]
        if e["clip"]:
            status, clip = two.files[e["clip"]]
            assert status == 200 and clip[4:8] == b"ftyp"
    store = EventStore(two.tmp / "events")
    stored = store.query(limit=1000)
    with_clips = [r for r in store.query_reviews(limit=1000) if r.clip_bytes]
    assert {r.camera for r in with_clips} == {"a", "b"}
    for r in with_clips:  # a review item's clip is cut from its own camera's frames
        assert shape_of_clip(two.tmp / "events" / r.id / CLIP) == SIZES[r.camera], r.id
        assert {o.camera for o in r.objects} == {r.camera}
    for e in stored:
        assert json.loads((two.tmp / "events" / e.id / META).read_text())["camera"] == e.camera
    store.close()
    print(f"\n{len(stored)} events stored, {len(with_clips)} review items with clips "
          f"(a {sum(e.camera == 'a' for e in with_clips)}, b {sum(e.camera == 'b' for e in with_clips)})")


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_events_page_filters_and_shows_the_camera(two) -> None:
    dom = two.dom
    select = re.search(r'<label id="camera-filter"([^>]*)>.*?</label>', dom, re.S)
    assert select and "hidden" not in select.group(1), dom[:3000]
    assert re.findall(r'<option value="(\w*)">', select.group(0)) == ["", "a", "b"]
    cards = re.findall(r'<div class="camera">(\w+)</div>', dom)
    assert set(cards) == {"a", "b"} and len(cards) == dom.count('<article class="item')
