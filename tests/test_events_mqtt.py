"""Events over MQTT with zones and the event store, against a real mosquitto (tests/mosquitto.py):
per-zone counts and their Home Assistant sensors, the snapshot on disk before the message that
names it, and MQTT snapshots byte-identical with and without a viewer on the stream."""

from __future__ import annotations

import json
import socket
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import VTEST
from daemonproc import DaemonProcess
from mosquitto import MOSQUITTO, Broker, Recorder
from edgedetect.storage.store import EventStore

pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed (apt install mosquitto)")

DEVICE = "pi-zones"
BASE = f"edgedetect/{DEVICE}"
WALKWAY = [[0.55, 0.15], [1.0, 0.15], [1.0, 0.8], [0.55, 0.8]]  # the right of the hall, where people walk
LAWN = [[0.0, 0.6], [0.4, 0.6], [0.4, 1.0], [0.0, 1.0]]  # the lower left: nobody walks there


def config(tmp: Path, port: int, *, record: bool, pace: bool = True, extra: str = "") -> Path:
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
uri = "{VTEST}"
pace = {str(pace).lower()}
[http]
port = 0
[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
device = "{DEVICE}"
[record]
enabled = {str(record).lower()}
dir = "{tmp / 'events'}"
clips = false
[[zones]]
name = "walkway"
polygon = {json.dumps(WALKWAY)}
[[zones]]
name = "lawn"
polygon = {json.dumps(LAWN)}
labels = ["person", "dog"]
{extra}
""")
    return cfg


class FileChecker:
    """Subscribes to the events topic and, the moment each message arrives, looks on disk for
    the snapshot it names."""

    def __init__(self, port: int, store: Path):
        self.store = store
        self.seen: list[tuple[dict, bool, int]] = []  # (event, file there and whole, bytes)
        self.ready = threading.Event()
        self.client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id="file-checker")
        self.client.on_connect = lambda c, u, f, r, p: (c.subscribe(f"{BASE}/events", qos=1), self.ready.set())
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self.ready.wait(10)

    def _on_message(self, client, userdata, msg) -> None:
        ev = json.loads(msg.payload)
        ok, size = False, 0
        if ev.get("snapshot"):
            eid, name = ev["snapshot"].split("/")[2:4]
            path = self.store / eid / name
            try:
                data = path.read_bytes()
                size = len(data)
                ok = data.endswith(b"\xff\xd9") and (self.store / eid / "crop.jpg").is_file()
            except OSError:
                ok = False
        self.seen.append((ev, ok, size))

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


@pytest.mark.slow
def test_zone_counts_discovery_and_snapshot_before_message(tmp_path: Path) -> None:
    with Broker(tmp_path / "broker") as broker, Recorder(broker.port) as rec:
        checker = FileChecker(broker.port, tmp_path / "events")
        try:
            with DaemonProcess("run", "--config", str(config(tmp_path, broker.port, record=True))) as d:
                rec.wait(lambda ms: sum(m.topic == f"{BASE}/events" and b'"end"' in m.payload for m in ms) >= 8,
                         timeout=60)
                stats = d.json("/api/stats")
                listed = {e["id"]: e for e in d.json("/api/events?limit=1000")["events"]}
                code, _ = d.terminate()
            time.sleep(0.3)
        finally:
            checker.close()
    assert code == 0
    # every start/update that names a snapshot found it on disk, whole, when it arrived
    named = [(ev, ok) for ev, ok, _ in checker.seen if ev["type"] in ("start", "update")]
    assert len(named) >= 8 and all(ev.get("snapshot") for ev, _ in named)
    assert all(ok for _, ok in named), [ev["id"] for ev, ok in named if not ok]
    # the MQTT ids are the store's ids; zones ride along
    started = {ev["id"]: ev for ev, _, _ in checker.seen if ev["type"] == "start"}
    assert set(started) <= set(listed)  # each started event is in the index
    ends = [ev for ev, _, _ in checker.seen if ev["type"] == "end"]
    assert any("walkway" in ev["zones"] for ev in ends) and all(set(ev["zones"]) <= {"walkway", "lawn"} for ev in ends)
    # objects live at the listing above went on collecting zones; the index after the stop has them all
    store = EventStore(tmp_path / "events")
    try:
        final = {e.id: e for e in store.query(limit=10_000)}
    finally:
        store.close()
    for ev in ends:
        assert set(ev["zones"]) == set(final[ev["id"]].zones), ev["id"]
    # per-zone counts: retained, following the objects in the walkway; nobody on the lawn
    walk = [int(m.payload) for m in rec.on(f"{BASE}/zone/walkway/person")]
    lawn = [int(m.payload) for m in rec.on(f"{BASE}/zone/lawn/person")]
    assert max(walk) >= 2 and walk[-1] == 0 and lawn == [0]
    assert all(m.retain is False for m in rec.on(f"{BASE}/zone/walkway/person"))  # live delivery
    assert stats["mqtt"]["zones"].keys() >= {"walkway/person", "lawn/person", "lawn/dog"}
    discovery = {m.topic: json.loads(m.payload) for m in rec.messages if m.topic.startswith("homeassistant/")}
    node = "edgedetect_pi-zones"
    for zone, label in (("walkway", "person"), ("lawn", "person"), ("lawn", "dog")):
        c = discovery[f"homeassistant/sensor/{node}/zone_{zone}_{label}_count/config"]
        assert c["state_topic"] == f"{BASE}/zone/{zone}/{label}" and c["unique_id"] == f"{node}_zone_{zone}_{label}_count"
        assert c["availability_topic"] == f"{BASE}/availability"
    print(f"\n{len(started)} events, {len(named)} start/update messages each found its snapshot on disk "
          f"({min(s for _, _, s in checker.seen if s)}-{max(s for _, _, s in checker.seen)} B); walkway counts "
          f"{walk[:20]}")


def snapshots(tmp: Path, with_viewer: bool, n: int) -> tuple[dict[tuple, bytes], dict, int]:
    """MQTT snapshots of vtest keyed by the event message each follows: (type, seq, frame index).
    pace = false: every frame is inferred, so an event starts on the same frame every run;
    with_viewer: a client reads /stream.mjpg throughout."""
    tmp.mkdir()
    with Broker(tmp / "broker") as broker, Recorder(broker.port, f"{BASE}/#") as rec:
        cfg = config(tmp, broker.port, record=False, pace=False)
        read = 0
        with DaemonProcess("run", "--config", str(cfg)) as d:
            stop = threading.Event()

            def view() -> None:
                nonlocal read
                s = socket.create_connection(("127.0.0.1", d.port), timeout=10)
                s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
                while not stop.is_set():
                    chunk = s.recv(65536)
                    if not chunk:
                        break
                    read += len(chunk)
                s.close()

            viewer = threading.Thread(target=view, daemon=True)
            if with_viewer:
                viewer.start()
            rec.wait(lambda ms: sum(m.topic.startswith(f"{BASE}/snapshot/") for m in ms) >= n, timeout=60)
            stats = d.json("/api/stats")
            stop.set()
            d.terminate()
            if with_viewer:
                viewer.join(5)
        # A snapshot is published right after its event message, by the same thread and client.
        out: dict[tuple, bytes] = {}
        last = None
        for m in rec.messages:
            if m.topic == f"{BASE}/events":
                last = json.loads(m.payload)
            elif m.topic.startswith(f"{BASE}/snapshot/") and last is not None and not m.retain:
                out[(last["type"], last["seq"], last["frame"])] = m.payload
        return out, stats, read


@pytest.mark.slow
def test_mqtt_snapshots_identical_with_and_without_a_viewer(tmp_path: Path) -> None:
    """Frames are immutable: the viewer's boxes are drawn on a copy, never on the frame the
    events thread crops, so a viewer on the stream changes no byte of an MQTT snapshot. (Updates
    are rate-limited by capture time, so they may fall on other frames in another run; starts
    and any snapshot of the same event at the same frame must match byte for byte.)"""
    alone, stats_a, _ = snapshots(tmp_path / "alone", False, 24)
    viewed, stats_b, read = snapshots(tmp_path / "viewed", True, 24)
    assert read > 1_000_000 and stats_b["viewers"] == 1  # the viewer really took the stream
    assert stats_a["mqtt"]["frames_dropped"] == 0 and stats_b["mqtt"]["frames_dropped"] == 0
    common = sorted(set(alone) & set(viewed))
    starts = [k for k in common if k[0] == "start"]
    assert len(starts) >= 10, (sorted(alone), sorted(viewed))
    for k in common:
        assert cv2.imdecode(np.frombuffer(alone[k], np.uint8), cv2.IMREAD_COLOR) is not None
        assert alone[k] == viewed[k], k
    print(f"\n{len(common)} MQTT snapshots ({len(starts)} starts) of the same event at the same frame: "
          f"byte-identical with and without a viewer ({sum(len(alone[k]) for k in common)} B; the viewer read "
          f"{read / 1e6:.1f} MB of stream)")
