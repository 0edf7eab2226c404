"""Prometheus `/metrics`: the figures of `/api/stats`, in the text exposition format.

A custom collector reads the stats snapshot on every scrape (nothing is kept between scrapes)
into its own registry, so nothing global is touched. Every sample carries the `device` label
(mqtt.device, or the host name) so one Prometheus can scrape many Pis, and every figure of a
camera (its state, rates, frames, latency) the `camera` label ("camera" for the one camera of a
config without [cameras]); the detector's and the host's figures are the whole daemon's.

Metrics (units converted to Prometheus base units where /api/stats uses others):

    edgedetect_info{model,source,version}           1
    edgedetect_uptime_seconds                        uptime_s
    edgedetect_source_state{camera,state}            1 for the camera's current source_state, else 0
    edgedetect_camera_fps, _inference_fps,
    edgedetect_published_fps, _skipped_fps{camera}   camera_fps, inference_fps, ... of each camera
    edgedetect_frames_captured_total,
    edgedetect_frames_inferred_total,
    edgedetect_frames_published_total,
    edgedetect_frames_skipped_total{camera}          frames_captured, frames_inferred, ...
    edgedetect_frames_dropped_total{camera}          dropped_frames
    edgedetect_packets_dropped_total{camera}         packets_dropped: the recorded stream's, gaps in clips
    edgedetect_camera_restarts_total{camera}         camera_restarts: the camera brought back in-process
    edgedetect_camera_reopens_total{camera}          camera_reopens: of those, with a new camera object
    edgedetect_latency_seconds{camera,stat}          latency_ms {mean,p50,p95} / 1000
    edgedetect_inference_errors_total                inference_errors
    edgedetect_inference_seconds{stat}               inference_ms {mean,p50,p95} / 1000
    edgedetect_cpu_percent{scope}                    cpu_percent {process,system}
    edgedetect_resident_memory_bytes                 rss_mb * 2**20
    edgedetect_cpu_temperature_celsius               temperature_c (when the hardware has it)
    edgedetect_throttled                             throttled, the firmware word
    edgedetect_throttled_flag{flag}                  1 per throttled_flags name, 0 otherwise
    edgedetect_cma_total_bytes, _cma_free_bytes      cma_total_mb, cma_free_mb * 2**20 (CMA: camera buffers)
    edgedetect_mqtt_connected                        mqtt.connected (with [mqtt] enabled)
    edgedetect_mqtt_connects_total                   mqtt.connects
    edgedetect_mqtt_messages_published_total         mqtt.messages_published
    edgedetect_mqtt_messages_dropped_total           mqtt.messages_dropped
    edgedetect_mqtt_frames_dropped_total             mqtt.frames_dropped
    edgedetect_events_started_total{label}           per label, from the tracker
    edgedetect_events_ended_total{label}
    edgedetect_objects{label}                        mqtt.objects: live tracked objects
"""

from __future__ import annotations

from typing import Any, Callable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.registry import Collector

from edgedetect import __version__
from edgedetect.config import ONE_CAMERA
from edgedetect.extensions import Hooks
from edgedetect.naming import device_name
from edgedetect.routes import Request, Response
from edgedetect.system.sysfs import THROTTLE_FLAGS

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
SOURCE_STATES = ("starting", "running", "reconnecting", "failed", "ended")
RATES = ("camera_fps", "inference_fps", "published_fps", "skipped_fps")
COUNTERS = {  # a camera's /api/stats key -> metric name (without _total)
    "frames_captured": "edgedetect_frames_captured",
    "frames_inferred": "edgedetect_frames_inferred",
    "frames_published": "edgedetect_frames_published",
    "frames_skipped": "edgedetect_frames_skipped",
    "dropped_frames": "edgedetect_frames_dropped",
    "packets_dropped": "edgedetect_packets_dropped",
    "camera_restarts": "edgedetect_camera_restarts",
    "camera_reopens": "edgedetect_camera_reopens",
}
MQTT_COUNTERS = {
    "connects": "edgedetect_mqtt_connects",
    "messages_published": "edgedetect_mqtt_messages_published",
    "messages_dropped": "edgedetect_mqtt_messages_dropped",
    "frames_dropped": "edgedetect_mqtt_frames_dropped",
}


class StatsCollector(Collector):
    """Turns one stats snapshot into metric families, on every scrape."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], device: str):
        self._snapshot = snapshot
        self.device = device

    def describe(self) -> list[Metric]:
        return []  # names depend on the hardware; no registration-time checks wanted

    def collect(self) -> Iterator[Metric]:
        yield from families(self._snapshot(), self.device)


def cameras_of(snap: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Each camera's figures: under "cameras" with several, the snapshot itself with one."""
    return snap["cameras"] if "cameras" in snap else {ONE_CAMERA: snap}


def families(snap: dict[str, Any], device: str) -> Iterator[Metric]:
    dev = [device]
    cams = cameras_of(snap)

    def gauge(name: str, doc: str, value: float, unit: str = "") -> GaugeMetricFamily:
        g = GaugeMetricFamily(name, doc, labels=["device"], unit=unit)
        g.add_metric(dev, float(value))
        return g

    def per_camera(family: type, name: str, doc: str, key: str) -> Metric:
        m = family(name, doc, labels=["device", "camera"])
        for cam, fig in cams.items():
            if key in fig:
                m.add_metric([device, cam], float(fig[key]))
        return m

    first = next(iter(cams.values()))
    info = InfoMetricFamily("edgedetect", "model, source and version of the daemon", labels=["device"])
    info.add_metric(dev, {"model": str(snap.get("model", "")), "source": str(first.get("source", "")),
                          "version": __version__})
    yield info
    if "uptime_s" in snap:
        yield gauge("edgedetect_uptime_seconds", "seconds since the daemon started", snap["uptime_s"])
    states = StateSetMetricFamily("edgedetect_source_state", "state of each camera's source", labels=["device", "camera"])
    for cam, fig in cams.items():
        state = str(fig.get("source_state", ""))
        if state:
            states.add_metric([device, cam], {s: s == state for s in sorted({*SOURCE_STATES, state})})
    yield states
    for key in RATES:
        yield per_camera(GaugeMetricFamily, f"edgedetect_{key}", f"{key.replace('_', ' ')} over the last few seconds",
                         key)
    for key, name in COUNTERS.items():
        yield per_camera(CounterMetricFamily, name, f"{key.replace('_', ' ')} since start", key)
    if "inference_errors" in snap:
        c = CounterMetricFamily("edgedetect_inference_errors", "inferences that failed since start", labels=["device"])
        c.add_metric(dev, float(snap["inference_errors"]))
        yield c
    g = GaugeMetricFamily("edgedetect_inference_seconds", "inference time over the recent window (stat: mean, p50, p95)",
                          labels=["device", "stat"])
    for stat, ms in (snap.get("inference_ms") or {}).items():
        g.add_metric([device, stat], float(ms) / 1000.0)
    yield g
    g = GaugeMetricFamily("edgedetect_latency_seconds", "capture-to-publish time over the recent window "
                          "(stat: mean, p50, p95)", labels=["device", "camera", "stat"])
    for cam, fig in cams.items():
        for stat, ms in (fig.get("latency_ms") or {}).items():
            g.add_metric([device, cam, stat], float(ms) / 1000.0)
    yield g
    cpu = snap.get("cpu_percent") or {}
    g = GaugeMetricFamily("edgedetect_cpu_percent", "CPU use in percent (scope: process, system)",
                          labels=["device", "scope"])
    for scope, value in cpu.items():
        g.add_metric([device, scope], float(value))
    yield g
    if "rss_mb" in snap:
        yield gauge("edgedetect_resident_memory_bytes", "resident memory of the daemon", snap["rss_mb"] * 2**20)
    if "temperature_c" in snap:
        yield gauge("edgedetect_cpu_temperature_celsius", "SoC temperature", snap["temperature_c"])
    if "throttled" in snap:
        yield gauge("edgedetect_throttled", "the firmware's get_throttled word", int(str(snap["throttled"]), 16))
        flags = set(snap.get("throttled_flags") or ())
        f = GaugeMetricFamily("edgedetect_throttled_flag", "1 when the named throttling bit is set",
                              labels=["device", "flag"])
        for name in THROTTLE_FLAGS.values():
            f.add_metric([device, name], 1.0 if name in flags else 0.0)
        yield f
    if "cma_total_mb" in snap:
        yield gauge("edgedetect_cma_total_bytes", "CMA memory reserved (camera and GPU buffers)", snap["cma_total_mb"] * 2**20)
        yield gauge("edgedetect_cma_free_bytes", "CMA memory free", snap["cma_free_mb"] * 2**20)
    mq = snap.get("mqtt")
    if isinstance(mq, dict):
        yield from _mqtt_families(mq, device)


def _mqtt_families(mq: dict[str, Any], device: str) -> Iterator[Metric]:
    dev = [device]
    g = GaugeMetricFamily("edgedetect_mqtt_connected", "1 while connected to the MQTT broker", labels=["device"])
    g.add_metric(dev, 1.0 if mq.get("connected") else 0.0)
    yield g
    for key, name in MQTT_COUNTERS.items():
        if key in mq:
            c = CounterMetricFamily(name, f"MQTT {key.replace('_', ' ')} since start", labels=["device"])
            c.add_metric(dev, float(mq[key]))
            yield c
    for key in ("events_started", "events_ended"):
        per_label = mq.get(f"{key}_by_label") or {}
        c = CounterMetricFamily(f"edgedetect_{key}", f"tracked-object {key.replace('_', ' ')} since start",
                                labels=["device", "label"])
        for label, n in per_label.items():
            c.add_metric([device, label], float(n))
        yield c
    objects = GaugeMetricFamily("edgedetect_objects", "tracked objects whose event is live",
                                labels=["device", "label"])
    for label, n in (mq.get("objects") or {}).items():
        objects.add_metric([device, label], float(n))
    yield objects


class MetricsExtension:
    """Only a route: the HTTP server's threads do the work, so nothing to start or stop."""

    def __init__(self, snapshot: Callable[[], dict[str, Any]], device: str):
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StatsCollector(snapshot, device))

    def route(self, request: Request) -> Response:
        return Response(200, generate_latest(self.registry), CONTENT_TYPE)

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def join(self, timeout: float | None = None) -> None:
        pass


def attach(hooks: Hooks) -> MetricsExtension:
    ext = MetricsExtension(hooks.figures, device_name(hooks.cfg))
    hooks.add_route("/metrics", ext.route)
    return ext
