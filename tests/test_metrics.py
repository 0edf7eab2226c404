"""Prometheus /metrics: parsed with prometheus_client's own text parser and compared with
/api/stats, on a synthetic snapshot and on the running daemon."""

from __future__ import annotations

import socket
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import MEDIA, VTEST
from daemonproc import DaemonProcess
from edgedetect.sinks.viewer import Request
from edgedetect.sinks.metrics import CONTENT_TYPE, MetricsExtension

SNAPSHOT = {
    "uptime_s": 12.5, "source": "vtest.avi", "source_state": "running", "model": "ssd",
    "camera_fps": 9.9, "inference_fps": 9.8, "published_fps": 9.8, "skipped_fps": 0.0,
    "frames_captured": 120, "frames_inferred": 118, "frames_published": 118, "frames_skipped": 0,
    "dropped_frames": 2, "inference_errors": 1,
    "inference_ms": {"mean": 14.5, "p50": 12.25, "p95": 30.0},
    "latency_ms": {"mean": 20.0, "p50": 18.0, "p95": 40.0},
    "cpu_percent": {"process": 55.5, "system": 80.0}, "rss_mb": 118.9,
    "temperature_c": 61.3, "throttled": "0x50005", "throttled_flags": ["under_voltage", "throttled",
                                                                       "under_voltage_occurred", "throttled_occurred"],
    "mqtt": {"connected": True, "connects": 2, "messages_published": 300, "messages_dropped": 4,
             "frames_dropped": 0, "events_started": 7, "events_ended": 5,
             "events_started_by_label": {"person": 6, "car": 1}, "events_ended_by_label": {"person": 5},
             "objects": {"person": 1, "car": 1}},
}


CAM = ("camera", "camera")  # the label of the one camera of a config without [cameras]


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels without device): value}; asserts every sample has the device label."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = dict(s.labels)
            assert "device" in labels, s
            device = labels.pop("device")
            out[(s.name, tuple(sorted(labels.items())))] = s.value
            out[("__device__", ())] = device
    return out


def scrape(ext: MetricsExtension) -> dict:
    r = ext.route(Request("GET", "/metrics", {}))
    assert r.status == 200 and r.content_type == CONTENT_TYPE
    return samples(r.body.decode())


def test_collector_maps_every_figure() -> None:
    ext = MetricsExtension(lambda: SNAPSHOT, "pi7")
    s = scrape(ext)
    assert s[("__device__", ())] == "pi7"
    assert s[("edgedetect_info", (("model", "ssd"), ("source", "vtest.avi"), ("version", "0.1.0")))] == 1
    assert s[("edgedetect_uptime_seconds", ())] == 12.5
    assert s[("edgedetect_source_state", (CAM, ("edgedetect_source_state", "running")))] == 1
    assert s[("edgedetect_source_state", (CAM, ("edgedetect_source_state", "ended")))] == 0
    for key in ("camera_fps", "inference_fps", "published_fps", "skipped_fps"):
        assert s[(f"edgedetect_{key}", (CAM,))] == SNAPSHOT[key]
    assert s[("edgedetect_frames_captured_total", (CAM,))] == 120
    assert s[("edgedetect_frames_dropped_total", (CAM,))] == 2
    assert s[("edgedetect_inference_errors_total", ())] == 1
    assert s[("edgedetect_inference_seconds", (("stat", "p50"),))] == 0.01225
    assert s[("edgedetect_latency_seconds", (CAM, ("stat", "p95")))] == 0.04
    assert s[("edgedetect_cpu_percent", (("scope", "process"),))] == 55.5
    assert s[("edgedetect_resident_memory_bytes", ())] == 118.9 * 2**20
    assert s[("edgedetect_cpu_temperature_celsius", ())] == 61.3
    assert s[("edgedetect_throttled", ())] == 0x50005
    assert s[("edgedetect_throttled_flag", (("flag", "under_voltage"),))] == 1
    assert s[("edgedetect_throttled_flag", (("flag", "freq_capped"),))] == 0
    assert s[("edgedetect_mqtt_connected", ())] == 1
    assert s[("edgedetect_mqtt_messages_dropped_total", ())] == 4
    assert s[("edgedetect_events_started_total", (("label", "car"),))] == 1
    assert s[("edgedetect_events_ended_total", (("label", "person"),))] == 5
    assert s[("edgedetect_objects", (("label", "person"),))] == 1


def test_collector_without_optional_figures() -> None:
    snap = {k: v for k, v in SNAPSHOT.items() if k not in ("temperature_c", "throttled", "throttled_flags", "mqtt")}
    snap["inference_ms"] = {}  # before the first frame
    s = scrape(MetricsExtension(lambda: snap, "pi7"))
    names = {name for name, _ in s}
    assert "edgedetect_cpu_temperature_celsius" not in names and "edgedetect_mqtt_connected" not in names
    assert not any(name == "edgedetect_inference_seconds" for name, _ in s)


def test_two_extensions_do_not_share_state() -> None:
    a = scrape(MetricsExtension(lambda: SNAPSHOT, "a"))
    b = scrape(MetricsExtension(lambda: {**SNAPSHOT, "frames_captured": 1}, "b"))
    assert a[("__device__", ())] == "a" and b[("__device__", ())] == "b"
    assert a[("edgedetect_frames_captured_total", (CAM,))] == 120 and b[("edgedetect_frames_captured_total", (CAM,))] == 1


def compare(s: dict, stats: dict) -> None:
    """Every /api/stats figure against its metric; exact for figures that no longer move."""
    assert s[("edgedetect_info", (("model", stats["model"]), ("source", stats["source"]), ("version", "0.1.0")))] == 1
    assert s[("edgedetect_source_state", (CAM, ("edgedetect_source_state", stats["source_state"])))] == 1
    for key in ("frames_captured", "frames_inferred", "frames_published", "frames_skipped"):
        assert s[(f"edgedetect_{key}_total", (CAM,))] == stats[key], key
    assert s[("edgedetect_inference_errors_total", ())] == stats["inference_errors"]
    assert s[("edgedetect_frames_dropped_total", (CAM,))] == stats["dropped_frames"]
    for stat, ms in stats["inference_ms"].items():
        assert s[("edgedetect_inference_seconds", (("stat", stat),))] == ms / 1000
    for stat, ms in stats["latency_ms"].items():
        assert s[("edgedetect_latency_seconds", (CAM, ("stat", stat)))] == ms / 1000
    for key in ("camera_fps", "inference_fps", "published_fps", "skipped_fps"):
        assert s[(f"edgedetect_{key}", (CAM,))] == stats[key], key
    assert abs(s[("edgedetect_uptime_seconds", ())] - stats["uptime_s"]) < 2
    assert abs(s[("edgedetect_resident_memory_bytes", ())] / 2**20 - stats["rss_mb"]) < 20
    for scope in stats["cpu_percent"]:
        assert 0 <= s[("edgedetect_cpu_percent", (("scope", scope),))] <= 100 * 64


def test_daemon_metrics_match_api_stats() -> None:
    # A still image: one frame, then the source ends and every figure but uptime holds still.
    with DaemonProcess("run", "--source", str(MEDIA / "kite_and_cold.jpg"), "--port", "0") as d:
        d.wait_for(lambda: d.json("/api/stats")["source_state"] == "ended" and d.json("/api/stats")["frames_inferred"])
        time.sleep(0.2)
        with urllib.request.urlopen(d.url("/metrics"), timeout=5) as r:
            ctype = r.headers["Content-Type"]
            text = r.read().decode()
        stats = d.json("/api/stats")
        assert d.get("/api/stats")[0] == 200
    assert ctype.startswith("text/plain; version=0.0.4")
    s = samples(text)
    assert s[("__device__", ())] == socket.gethostname().split(".")[0]
    compare(s, stats)
    assert stats["frames_inferred"] == 1


@pytest.mark.slow
def test_daemon_metrics_while_running(tmp_path) -> None:
    cfg = tmp_path / "c.toml"
    cfg.write_text(f'[source]\nuri = "{VTEST}"\n[http]\nport = 0\n[mqtt]\ndevice = "hall-1"\n')
    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] >= 20)
        before = d.json("/api/stats")
        status, body = d.get("/metrics")
        after = d.json("/api/stats")
    assert status == 200
    s = samples(body.decode())
    assert s[("__device__", ())] == "hall-1"
    for key in ("frames_captured", "frames_inferred", "frames_published"):
        assert before[key] <= s[(f"edgedetect_{key}_total", (CAM,))] <= after[key], key
    assert abs(s[("edgedetect_inference_fps", (CAM,))] - after["inference_fps"]) < 2
    assert s[("edgedetect_source_state", (CAM, ("edgedetect_source_state", "running")))] == 1
    assert ("edgedetect_mqtt_connected", ()) not in s  # [mqtt] is off


def test_several_cameras_each_figure_carries_its_camera() -> None:
    cams = {name: {k: SNAPSHOT[k] for k in ("source", "source_state", "camera_fps", "inference_fps", "published_fps",
                                            "skipped_fps", "frames_captured", "frames_inferred", "frames_published",
                                            "frames_skipped", "dropped_frames", "latency_ms")}
            for name in ("door", "yard")}
    cams["yard"] = {**cams["yard"], "source_state": "reconnecting", "frames_captured": 7, "camera_fps": 0.0}
    snap = {k: SNAPSHOT[k] for k in ("uptime_s", "model", "inference_fps", "frames_inferred", "inference_errors",
                                     "inference_ms", "cpu_percent", "rss_mb")}
    s = scrape(MetricsExtension(lambda: {**snap, "cameras": cams}, "pi7"))
    assert s[("edgedetect_frames_captured_total", (("camera", "door"),))] == 120
    assert s[("edgedetect_frames_captured_total", (("camera", "yard"),))] == 7
    assert s[("edgedetect_source_state", (("camera", "yard"), ("edgedetect_source_state", "reconnecting")))] == 1
    assert s[("edgedetect_source_state", (("camera", "door"), ("edgedetect_source_state", "running")))] == 1
    assert s[("edgedetect_camera_fps", (("camera", "yard"),))] == 0.0
    assert s[("edgedetect_inference_seconds", (("stat", "p50"),))] == 0.01225  # the detector's, once
