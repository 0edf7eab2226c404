"""Names that would share an MQTT topic or a Home Assistant id (issue 22 item 6): labels that
differ in case, in characters a topic level cannot carry, or that are not ASCII; zones that
differ only in case; a label and a zone whose joined ids meet. Each gets its own topic, or is
refused in one line naming both, and detection goes on."""

from __future__ import annotations

import dataclasses
import json
import logging
import re
from pathlib import Path

import pytest

from conftest import COCO_LABELS, VTEST
from daemonproc import DaemonProcess
from edgedetect import config
from edgedetect.config import Config, ZoneConfig
from edgedetect.errors import ConfigError
from edgedetect.messaging.topics import slug
from edgedetect.sinks.events import attach
from fakehooks import make_hooks
from mosquitto import MOSQUITTO, Broker, Recorder

DEVICE = "pi-names"
BASE = f"edgedetect/{DEVICE}"
NODE = f"edgedetect_{DEVICE}"
# Each of these pairs became one topic level: 'unknown', 'a_b'.
HOSTILE = ["人", "车", "a+b", "a#b", "Airplane", "person"]


# --- slug ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["person", "front_door", "traffic light", "class 3", "pi-test", "unknown", "x1"])
def test_plain_names_keep_their_slug(name: str) -> None:
    assert slug(name) == name.replace(" ", "_")


def test_slugs_tell_apart_what_lower_case_ascii_merged() -> None:
    slugs = [slug(n) for n in HOSTILE]
    assert slugs == ["unknown_491277", "unknown_7c852e", "a_b_afa946", "a_b_9bf29f", "airplane", "person"]
    assert all(re.fullmatch(r"[a-z0-9_-]+", s) for s in slugs)
    assert slug("Traffic Light!") == "traffic_light_37caa7" and slug("traffic  light") != slug("traffic light")
    # case alone keeps today's topic ('Driveway' stays 'driveway'); names that meet are refused instead
    assert slug("Driveway") == slug("driveway") == "driveway"


# --- zones that differ only in case ----------------------------------------------------------


def test_zone_names_differing_in_case_are_one_line(tmp_path: Path) -> None:
    p = tmp_path / "edgedetect.toml"
    square = "polygon = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5], [0.1, 0.5]]\n"
    p.write_text("".join(f'[[zones]]\nname = "{name}"\n{square}' for name in ("Door", "hall", "door")))
    with pytest.raises(ConfigError) as e:
        config.load(p)
    assert str(e.value) == (f"{p}: zone 'door': differs from zone 'Door' only in case; "
                            "expected zone names that differ in more than case")


# --- a clash left after slugs: refused at attach, in one line, detection untouched -------------


def mqtt_config(zones: list[ZoneConfig], labels: list[str], tmp_path: Path, record: bool) -> Config:
    cfg = Config()
    cfg.mqtt.enabled, cfg.mqtt.device, cfg.mqtt.labels = True, DEVICE, labels
    cfg.zones = zones
    cfg.record.enabled, cfg.record.dir = record, str(tmp_path / "events")
    return cfg


@pytest.mark.parametrize("record", [False, True])
def test_zone_and_label_ids_that_meet_turn_mqtt_off(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                                    record: bool) -> None:
    # zone 'a_b' with label 'c' and zone 'a' with label 'b_c' are both ..._zone_a_b_c_count
    square = [[0.1, 0.1], [0.5, 0.1], [0.5, 0.5]]
    cfg = mqtt_config([ZoneConfig("a_b", square), ZoneConfig("a", square)], [], tmp_path, record)
    hooks, reg = make_hooks(cfg)
    hooks = dataclasses.replace(hooks, labels=("c", "b_c"))  # the model's labels
    with caplog.at_level(logging.ERROR, logger="edgedetect.sinks.events"):
        ext = attach(hooks)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert lines == [f"mqtt: zone 'a_b' label 'c' and zone 'a' label 'b_c' would both be Home Assistant id "
                     f"{NODE}_zone_a_b_c_count; expected a topic and an id of its own for each; MQTT stays off"]
    assert "mqtt" not in reg.figures
    if record:  # the event store keeps its tracker
        assert ext is not None and ext.link is None and ext.recording is not None
    else:
        assert ext is None and reg.results == []


# --- against mosquitto: the daemon on vtest.avi with labels renamed ----------------------------


def renamed_labels(tmp: Path, names: list[str]) -> Path:
    """The COCO labels with the first ids renamed (0 is person, walking through vtest.avi)."""
    lines = COCO_LABELS.read_text().splitlines()
    for i, name in enumerate(names):
        lines[i] = f"{i}  {name}"
    p = tmp / "labels.txt"
    p.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return p


def daemon(tmp: Path, port: int, labels_file: Path, mqtt_labels: list[str]) -> DaemonProcess:
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
uri = "{VTEST}"
pace = true
[model]
labels = "{labels_file}"
[http]
port = 0
[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
device = "{DEVICE}"
labels = {json.dumps(mqtt_labels, ensure_ascii=False)}
""", encoding="utf-8")
    return DaemonProcess("run", "--config", str(cfg))


needs_broker = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed (apt install mosquitto)")


@needs_broker
def test_hostile_labels_get_topics_and_ids_of_their_own(tmp_path: Path) -> None:
    labels_file = renamed_labels(tmp_path, HOSTILE)  # person -> 人: the people in the hall are 人
    with Broker(tmp_path / "broker") as broker, Recorder(broker.port) as rec:
        with daemon(tmp_path, broker.port, labels_file, HOSTILE) as d:
            rec.wait(lambda ms: any(m.topic == f"{BASE}/events" and json.loads(m.payload)["type"] == "start"
                                    for m in ms), timeout=60)
            code, _ = d.terminate()
    assert code == 0
    counts = {m.topic for m in rec.messages if m.topic.startswith(f"{BASE}/count/")}
    assert counts == {f"{BASE}/count/{s}" for s in
                      ("unknown_491277", "unknown_7c852e", "a_b_afa946", "a_b_9bf29f", "airplane", "person")}
    discovery = {m.topic: json.loads(m.payload) for m in rec.messages if m.topic.startswith("homeassistant/")}
    sensors = {c["name"]: c for c in discovery.values() if c["name"].endswith(" count")}
    assert sorted(sensors) == sorted(f"{label} count" for label in HOSTILE)
    assert len({c["unique_id"] for c in sensors.values()}) == len({c["state_topic"] for c in sensors.values()}) == 6
    assert sensors["人 count"]["state_topic"] == f"{BASE}/count/unknown_491277"
    # the people walking through are 人: their events, counts and snapshots are under 人's slug
    assert "人" in {json.loads(m.payload)["label"] for m in rec.on(f"{BASE}/events")}
    assert any(int(m.payload) > 0 for m in rec.on(f"{BASE}/count/unknown_491277"))
    assert rec.on(f"{BASE}/snapshot/unknown_491277")
    assert not [m.topic for m in rec.messages if m.topic.endswith(("/unknown", "/a_b"))]  # the merged levels


@pytest.mark.slow
@needs_broker
def test_labels_still_sharing_a_topic_leave_mqtt_off_and_detection_on(tmp_path: Path) -> None:
    labels_file = renamed_labels(tmp_path, ["traffic light", "traffic_light"])
    with Broker(tmp_path / "broker") as broker, Recorder(broker.port) as rec:
        with daemon(tmp_path, broker.port, labels_file, []) as d:  # []: every label of the model
            # 30 frames at the file's pace: MQTT, had it started, would have connected and published
            d.wait_for(lambda: d.json("/api/stats")["frames_published"] >= 30, timeout=60)
            detections = d.wait_for(lambda: d.json("/api/detections")["detections"], timeout=30)
            status, _ = d.get("/healthz")
            stats = d.json("/api/stats")
            code, _ = d.terminate()
        broker_log = broker.read_log()
    assert code == 0 and status == 200
    assert any(x["label"] == "traffic light" for x in detections)  # the people, under their new name
    errors = [ln for ln in d.lines if "mqtt:" in ln]
    assert len(errors) == 1 and errors[0].endswith(
        f"mqtt: label 'traffic light' and label 'traffic_light' would both be topic {BASE}/count/traffic_light; "
        "expected a topic and an id of its own for each; MQTT stays off"), d.output()[-2000:]
    assert "mqtt" not in stats
    assert [m.topic for m in rec.messages] == [] and f"edgedetect-{DEVICE}" not in broker_log
