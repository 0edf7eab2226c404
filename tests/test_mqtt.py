"""MQTT against a real mosquitto (tests/mosquitto.py): the daemon runs as a process on
vtest.avi and a paho subscriber records everything it publishes."""

from __future__ import annotations

import json
import os
import signal
import socket
import statistics
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import pytest

from conftest import VTEST
from daemonproc import DaemonProcess
from edgedetect.config import Config, MqttConfig
from edgedetect.errors import UserError
from edgedetect.extensions import EXTENSIONS
from edgedetect.messaging.discovery import discovery_configs
from edgedetect.messaging.topics import Topics, check_config, slug
from edgedetect.sinks.events import attach
from edgedetect.tracking.events import crop_region
from fakehooks import make_hooks
from mosquitto import MOSQUITTO, Broker, Recorder, free_port

pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed (apt install mosquitto)")

DEVICE = "pi-test"
BASE = f"edgedetect/{DEVICE}"


def write_config(tmp: Path, port: int, *, protocol: str = "3.1.1", loop: bool = False, stats: float = 1.0,
                 extra: str = "") -> Path:
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
uri = "{VTEST}"
pace = true
loop = {str(loop).lower()}
[http]
port = 0
[stats]
interval = {stats}
[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
protocol = "{protocol}"
device = "{DEVICE}"
keepalive = 5
{extra}
""")
    return cfg


def daemon(cfg: Path, env: dict[str, str] | None = None) -> DaemonProcess:
    return DaemonProcess("run", "--config", str(cfg), env=env)


def events_of(rec: Recorder) -> list[dict]:
    return [json.loads(m.payload) for m in rec.on(f"{BASE}/events")]


def payloads(rec: Recorder, topic: str) -> list[str]:
    return [m.payload.decode() for m in rec.on(topic)]


def check_event_stream(events: list[dict], complete: bool) -> tuple[int, int]:
    """Start before update before end, one start and one end per id; returns (starts, ends)."""
    state: dict[str, str] = {}
    seqs = []
    for e in events:
        assert e["label"] == "person" and e["device"] == DEVICE
        # score is the latest box, which may be a weak one ([track] low_score 0.1) holding the object
        assert 0.1 <= e["score"] <= e["top_score"] <= 1.0 and e["top_score"] >= 0.5
        x0, y0, x1, y1 = e["box"]
        assert 0 <= x0 < x1 <= 768 and 0 <= y0 < y1 <= 576, e
        if e["type"] == "start":
            assert e["id"] not in state, f"second start for {e['id']}"
            assert e["end_time"] is None and e["start_time"] <= e["last_seen"]
            state[e["id"]] = "live"
            seqs.append(e["seq"])
        elif e["type"] == "update":
            assert state.get(e["id"]) == "live", e
        else:
            assert state.get(e["id"]) == "live", f"end without a live start: {e}"
            assert e["start_time"] <= e["last_seen"] == e["end_time"] and e["frames"] >= 3
            state[e["id"]] = "ended"
        assert e["id"].endswith(f"-{e['seq']}")
    assert seqs == sorted(seqs) and len(set(seqs)) == len(seqs)
    if complete:
        assert all(s == "ended" for s in state.values()), "events left without an end"
    return len(seqs), sum(s == "ended" for s in state.values())


# --- without a broker ---------------------------------------------------------------------------


def test_config_errors_name_the_key(tmp_path: Path) -> None:
    ok = MqttConfig(enabled=True)
    check_config(ok, "pi1")
    cases = [
        (MqttConfig(tls=True, ca_file=str(tmp_path / "missing.pem")), "mqtt.ca_file"),
        (MqttConfig(ca_file=str(tmp_path)), "mqtt.ca_file"),
        (MqttConfig(password="x"), "mqtt.password"),
        (MqttConfig(prefix="a/#"), "mqtt.prefix"),
        (MqttConfig(prefix="/a"), "mqtt.prefix"),
        (MqttConfig(discovery_prefix=""), "mqtt.discovery_prefix"),
    ]
    for mc, key in cases:
        with pytest.raises(UserError, match=f"^{key}: ") as e:
            check_config(mc, "pi1")
        assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="^mqtt.device: "):
        check_config(ok, "a/b")
    bad_pem = tmp_path / "bad.pem"
    bad_pem.write_text("not a certificate\n")
    cfg = Config()
    cfg.mqtt = MqttConfig(enabled=True, tls=True, ca_file=str(bad_pem))
    hooks, _ = make_hooks(cfg)
    with pytest.raises(UserError, match="^mqtt.ca_file: "):
        attach(hooks)
    cfg.mqtt = MqttConfig(enabled=False)
    events = next(r for r in EXTENSIONS if r.module == "edgedetect.sinks.events")
    assert not events.wanted(cfg)


def test_snapshot_crop_region() -> None:
    assert crop_region((0.5, 0.5, 0.55, 0.6), 768, 576) == (323, 237, 483, 397)  # small: 160 px around it
    assert crop_region((0.0, 0.0, 0.05, 0.1), 768, 576) == (0, 0, 160, 160)  # kept inside the frame
    assert crop_region((0.9, 0.2, 1.0, 0.9), 768, 576) == (608, 0, 768, 576)  # at the edge; tall: the whole height
    assert crop_region((0.0, 0.0, 1.0, 1.0), 768, 576) == (0, 0, 768, 576)


def test_listener_is_cheap_bounded_and_skips_held_frames() -> None:
    from edgedetect.sinks.events import QUEUE_FRAMES, EventsExtension
    from edgedetect.frames import Frame, Result
    from edgedetect.pipeline.worker import held

    cfg = Config()
    cfg.mqtt = MqttConfig(enabled=True, device="pi1")
    ext = EventsExtension(cfg, "pi1", dict)  # not started: nothing drains the queue
    img = np.zeros((576, 768, 3), np.uint8)
    first = Result(Frame(0, 0.0, img), [])
    ext.on_result(first)
    ext.on_result(held(first, Frame(1, 0.1, img)))  # motion gate: same detections, not evidence
    assert ext._queue.qsize() == 1
    t0 = time.perf_counter()
    for i in range(2, 2 + QUEUE_FRAMES + 50):
        ext.on_result(Result(Frame(i, i / 10, img), []))
    per_call = (time.perf_counter() - t0) / (QUEUE_FRAMES + 50)
    assert ext._queue.qsize() == QUEUE_FRAMES
    assert ext.stats()["frames_dropped"] == 51
    assert per_call < 200e-6, per_call  # microseconds, in the inference thread


def test_topics_and_discovery() -> None:
    t = Topics("home/cams", "hall", "homeassistant")
    assert t.count("traffic light") == "home/cams/hall/count/traffic_light"
    assert slug("traffic light") == "traffic_light" and slug("Traffic Light!").startswith("traffic_light_")
    configs = dict(discovery_configs(t, "hall", "ssd", {"temperature_c": 50.0, "throttled": "0x0"}))
    assert "homeassistant/sensor/edgedetect_hall/cpu_temperature/config" in configs
    assert "homeassistant/binary_sensor/edgedetect_hall/throttled/config" in configs
    for c in configs.values():
        assert c["availability_topic"] == "home/cams/hall/availability" and c["state_topic"] == t.stats
        assert c["unique_id"].startswith("edgedetect_hall_") and c["device"]["identifiers"] == ["edgedetect_hall"]
    # no temperature sensor on hardware that has none
    assert len(discovery_configs(t, "hall", "ssd", {})) == len(configs) - 2


# --- against mosquitto ------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("protocol", ["5"])
def test_events_counts_stats_discovery(tmp_path: Path, protocol: str) -> None:
    with Broker(tmp_path / "broker") as broker, Recorder(broker.port) as rec:
        cfg = write_config(tmp_path, broker.port, protocol=protocol)
        t0 = time.monotonic()
        with daemon(cfg) as d:
            # the tracker holds a walker for as long as they are in view, so starts come a few a
            # second at first and then sparsely: 8 of them arrive about 15 s into vtest.avi here
            rec.wait(lambda ms: sum(m.topic == f"{BASE}/events" and b'"start"' in m.payload for m in ms) >= 8,
                     timeout=60)
            stats = d.json("/api/stats")
            status, body = d.get("/metrics")
            code, took = d.terminate()
        t1 = time.monotonic()
        assert code == 0 and took < 3
        time.sleep(0.3)
        msgs = [m for m in rec.messages if m.topic.startswith(("edgedetect/", "homeassistant/"))]

    assert payloads(rec, f"{BASE}/availability") == ["online", "offline"]
    events = events_of(rec)
    starts, ends = check_event_stream(events, complete=True)
    assert starts >= 5 and ends == starts  # people walk through; SIGTERM ends the live ones
    types = Counter(e["type"] for e in events)
    assert types["update"] <= 2 * starts  # events, not per-frame messages

    # the count topic follows the events: at every count message, the live events so far
    live, checked = 0, 0
    for m in rec.messages:
        if m.topic == f"{BASE}/events":
            live += {"start": 1, "end": -1}.get(json.loads(m.payload)["type"], 0)
        elif m.topic == f"{BASE}/count/person":
            assert int(m.payload) == live, (checked, m.payload, live)
            checked += 1
    assert checked >= 5 and payloads(rec, f"{BASE}/count/person")[-1] == "0"

    snaps = rec.on(f"{BASE}/snapshot/person")
    assert snaps and all(m.retain is False for m in snaps)  # live delivery, retained on the broker
    for m in snaps:
        img = cv2.imdecode(np.frombuffer(m.payload, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and 160 <= img.shape[0] <= 576 and 160 <= img.shape[1] <= 768
    assert sum(len(m.payload) for m in snaps) / len(snaps) < 30_000  # crops, not whole frames

    discovery = {m.topic: json.loads(m.payload) for m in rec.messages if m.topic.startswith("homeassistant/")}
    node = "edgedetect_pi-test"
    count_cfg = discovery[f"homeassistant/sensor/{node}/person_count/config"]
    assert count_cfg["state_topic"] == f"{BASE}/count/person"
    assert discovery[f"homeassistant/sensor/{node}/inference_fps/config"]["value_template"] == \
        "{{ value_json.inference_fps }}"
    assert f"homeassistant/binary_sensor/{node}/person_occupancy/config" in discovery

    stats_msgs = [json.loads(p) for p in payloads(rec, f"{BASE}/stats")]
    assert len(stats_msgs) >= 3 and stats_msgs[-1]["inference_fps"] > 5
    mq = stats["mqtt"]
    assert mq["connected"] and mq["messages_dropped"] == 0 and mq["frames_dropped"] == 0
    assert mq["events_started"] <= starts and mq["events_started_by_label"]["person"] == mq["events_started"]
    assert status == 200 and b"edgedetect_mqtt_messages_published_total" in body

    rate = len(msgs) / (t1 - t0)
    per_event = len(msgs) / starts
    print(f"\nMQTT {protocol}: {len(msgs)} messages in {t1 - t0:.1f} s = {rate:.1f}/s "
          f"({types['start']} start, {types['update']} update, {types['end']} end, "
          f"{len(payloads(rec, f'{BASE}/count/person'))} counts, {len(snaps)} snapshots, "
          f"{len(stats_msgs)} stats at 1 s)")
    assert rate < 40 and per_event < 15


def test_last_will_on_sigkill(tmp_path: Path) -> None:
    with Broker(tmp_path / "broker") as broker, Recorder(broker.port) as rec:
        cfg = write_config(tmp_path, broker.port)
        with daemon(cfg) as d:
            rec.wait(lambda ms: any(m.topic == f"{BASE}/availability" and m.payload == b"online" for m in ms))
            os.kill(d.proc.pid, signal.SIGKILL)
            d.proc.wait(5)
            t_kill = time.monotonic()
            rec.wait(lambda ms: [m for m in ms if m.topic == f"{BASE}/availability"][-1].payload == b"offline",
                     timeout=10)
            took = time.monotonic() - t_kill
        # retained: a client that subscribes later sees the device offline
        with Recorder(broker.port, f"{BASE}/availability") as late:
            late.wait(lambda ms: ms and ms[-1].payload == b"offline" and ms[-1].retain, timeout=5)
    assert took < 5  # the kernel closes the socket; the broker sends the will at once


@pytest.mark.slow
def test_broker_restart_mid_run_events_resume_fps_holds(tmp_path: Path) -> None:
    broker = Broker(tmp_path / "broker").start()
    try:
        with Recorder(broker.port) as rec:
            cfg = write_config(tmp_path, broker.port, loop=True, stats=0.5)
            with daemon(cfg) as d:
                rec.wait(lambda ms: any(m.topic == f"{BASE}/events" for m in ms), timeout=30)
                time.sleep(2)
                before = [d.json("/api/stats")["inference_fps"] for _ in range(6) if not time.sleep(0.5)]
                broker.stop()
                t_down = time.monotonic()
                d.wait_for(lambda: not d.json("/api/stats")["mqtt"]["connected"], timeout=10)
                during = []
                while time.monotonic() - t_down < 6:
                    time.sleep(0.5)
                    during.append(d.json("/api/stats")["inference_fps"])
                outage = d.json("/api/stats")["mqtt"]
                broker.start()
                t_up = time.monotonic()
                rec.wait(lambda ms: any(m.t > t_up and m.topic == f"{BASE}/availability" and m.payload == b"online"
                                        for m in ms), timeout=40)
                rec.wait(lambda ms: sum(m.t > t_up and m.topic == f"{BASE}/events" for m in ms) >= 3, timeout=30)
                after = d.json("/api/stats")
                assert d.get("/healthz")[0] == 200
            # the pipeline never waited on the broker
            ratio = min(during) / statistics.median(before)
            print(f"\ninference fps before {before}, during outage {during}, ratio {ratio:.2f}; "
                  f"reconnected after {after['mqtt']['connects'] - 1} outage(s); outage figures {outage}")
            assert statistics.median(before) > 8  # vtest is paced at 10 fps
            assert ratio >= 0.8
            assert after["mqtt"]["connects"] >= 2 and after["mqtt"]["connected"]
            assert after["mqtt"]["frames_dropped"] == 0  # the tracker saw every frame throughout
            # the counts and availability were re-sent, current, after the restart
            fresh = [m for m in rec.messages if m.t > t_up]
            assert any(m.topic == f"{BASE}/count/person" for m in fresh)
            assert any(m.topic.startswith("homeassistant/") for m in fresh)
    finally:
        broker.stop()


def _ready_socket(path: Path) -> socket.socket:
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(str(path))
    s.settimeout(30)
    return s


def _time_to_ready(cfg: Path, tmp: Path) -> tuple[DaemonProcess, float]:
    sock_path = tmp / f"notify-{time.monotonic_ns()}.sock"
    s = _ready_socket(sock_path)
    t0 = time.monotonic()
    d = daemon(cfg, env={"NOTIFY_SOCKET": str(sock_path)})
    d.start()
    try:
        while True:
            data = s.recv(4096).decode()
            if "READY=1" in data.split("\n"):
                return d, time.monotonic() - t0
    except BaseException:
        d.stop()
        raise
    finally:
        s.close()


@pytest.mark.slow
def test_broker_absent_at_start_does_not_delay_ready(tmp_path: Path) -> None:
    port = free_port()
    (tmp_path / "absent").mkdir()
    d, absent = _time_to_ready(write_config(tmp_path / "absent", port), tmp_path)
    try:
        st = d.json("/api/stats")
        assert not st["mqtt"]["connected"] and st["frames_inferred"] > 0
        assert d.get("/healthz")[0] == 200
        # the broker comes up later: the daemon finds it by itself
        with Broker(tmp_path / "broker", port) as broker, Recorder(broker.port) as rec:
            rec.wait(lambda ms: any(m.topic == f"{BASE}/availability" and m.payload == b"online" for m in ms),
                     timeout=40)
            rec.wait(lambda ms: any(m.topic == f"{BASE}/events" for m in ms), timeout=20)
            d.stop()
            (tmp_path / "present").mkdir()
            d, present = _time_to_ready(write_config(tmp_path / "present", port), tmp_path)
            d.stop()
    finally:
        d.stop()
    print(f"\nREADY after {absent:.2f} s with the broker absent, {present:.2f} s with it present")
    assert absent <= present + 1.0
