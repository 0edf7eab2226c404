"""Detections leave the Pi: tracked events, per-label counts, stats and Home Assistant discovery
over MQTT.

    inference thread ──▶ listener ──▶ bounded queue ──▶ events thread: tracker, JPEG, publish
    stats thread ─────▶ sink ──────▶ latest stats ──┘            │
                                              paho network thread ◀┘ ──▶ broker

The inference thread only appends to a bounded queue (a full queue drops the frame for the
tracker and counts it). Everything else runs in the events thread; paho's own thread does the
network and reconnects with backoff. Messages the broker cannot take now are held up to
`queue_limit` (QoS 1) and dropped and counted beyond that; counts and stats are never queued
while the broker is away: they are re-sent, current, when it comes back.

Topics, under BASE = `{prefix}/{device}`:

    BASE/availability       online | offline (retained; offline is also the last will)
    BASE/events             JSON start/update/end of one tracked object (QoS 1)
    BASE/count/LABEL        live objects of LABEL, e.g. 2 (retained)
    BASE/snapshot/LABEL     JPEG of the latest started/updated object, cropped around it with its
                            box drawn (retained)
    BASE/stats              the /api/stats figures as JSON, every stats interval (retained)
    DISCOVERY/sensor|binary_sensor/edgedetect_DEVICE/*/config   Home Assistant discovery
"""

from __future__ import annotations

import json
import logging
import queue
import re
import socket
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgedetect import __version__, clock
from edgedetect.config import Config, MqttConfig
from edgedetect.errors import UserError
from edgedetect.frames import Result
from edgedetect.stage import StageThread
from edgedetect.tracker import TrackEvent, Tracker, TrackerConfig

if TYPE_CHECKING:
    from edgedetect.daemon import Daemon

log = logging.getLogger("edgedetect.events")

QUEUE_FRAMES = 16  # results waiting for the events thread; each holds a reference to its frame
RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30
QOS_STATE = 1  # events, counts, availability, discovery
QOS_BULK = 0  # stats and snapshots: only the newest matters
ONLINE, OFFLINE = "online", "offline"
SNAPSHOT_MIN_PX = 160
_TOPIC_BAD = re.compile(r"[+#\x00]")


def device_name(cfg: Config) -> str:
    """The device name used in topics, discovery and metric labels: mqtt.device or the host name."""
    return cfg.mqtt.device or socket.gethostname().split(".")[0] or "edgedetect"


def slug(text: str) -> str:
    """A label as a topic level and Home Assistant object id: 'traffic light' -> 'traffic_light'."""
    return re.sub(r"[^a-zA-Z0-9_-]+", "_", text).strip("_").lower() or "unknown"


@dataclass(frozen=True, slots=True)
class Topics:
    prefix: str
    device: str
    discovery_prefix: str

    @property
    def base(self) -> str:
        return f"{self.prefix}/{self.device}"

    @property
    def availability(self) -> str:
        return f"{self.base}/availability"

    @property
    def events(self) -> str:
        return f"{self.base}/events"

    @property
    def stats(self) -> str:
        return f"{self.base}/stats"

    def count(self, label: str) -> str:
        return f"{self.base}/count/{slug(label)}"

    def snapshot(self, label: str) -> str:
        return f"{self.base}/snapshot/{slug(label)}"

    @property
    def node(self) -> str:
        return f"edgedetect_{slug(self.device)}"

    def discovery(self, component: str, object_id: str) -> str:
        return f"{self.discovery_prefix}/{component}/{self.node}/{object_id}/config"


def check_config(mc: MqttConfig, device: str) -> None:
    """One-line errors for settings that cannot work, before any thread starts."""
    for key, value in (("mqtt.prefix", mc.prefix), ("mqtt.discovery_prefix", mc.discovery_prefix)):
        if not value or _TOPIC_BAD.search(value) or value.startswith("/") or value.endswith("/"):
            raise UserError(f"{key}: expected a topic prefix without '+', '#' or a leading or trailing '/', "
                            f"got {value!r}")
    if not device or _TOPIC_BAD.search(device) or "/" in device:
        raise UserError(f"mqtt.device: expected a name without '/', '+' or '#', got {device!r}")
    if mc.password and not mc.username:
        raise UserError("mqtt.password: set without mqtt.username; expected both or neither")
    if mc.ca_file:
        if not mc.tls:
            raise UserError("mqtt.ca_file: set but mqtt.tls is false; expected tls = true with a CA file")
        if not Path(mc.ca_file).expanduser().is_file():
            raise UserError(f"mqtt.ca_file: {mc.ca_file} does not exist; expected a CA certificate (PEM)")


@dataclass
class Figures:
    """What the events extension adds to /api/stats under "mqtt"."""

    connected: bool = False
    connects: int = 0
    published: int = 0  # messages handed to the client (sent, or held until the broker is back)
    dropped: int = 0  # messages given up: broker away and queue full, or not worth queueing
    frames_dropped: int = 0  # results the tracker never saw (events thread behind)
    events_started: int = 0
    events_ended: int = 0
    started_by_label: dict[str, int] = field(default_factory=dict)
    ended_by_label: dict[str, int] = field(default_factory=dict)
    live: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "messages_published": self.published,
            "messages_dropped": self.dropped,
            "frames_dropped": self.frames_dropped,
            "events_started": self.events_started,
            "events_ended": self.events_ended,
            "events_started_by_label": dict(self.started_by_label),
            "events_ended_by_label": dict(self.ended_by_label),
            "objects": dict(self.live),
        }


@dataclass(frozen=True, slots=True)
class _Item:
    """A result as the events thread needs it; created in microseconds in the inference thread."""

    index: int
    t: float
    image: np.ndarray
    detections: list


class MqttLink:
    """The paho client: connects in the background, reconnects with backoff, never blocks the
    caller, and counts what it had to drop."""

    def __init__(self, mc: MqttConfig, topics: Topics, client_id: str, figures: Figures, lock: threading.Lock):
        self.mc = mc
        self.topics = topics
        self._figures = figures
        self._lock = lock
        self.resync = threading.Event()  # set on every (re)connect: re-send the current state
        self._logged_down = False
        proto = mqtt.MQTTv5 if mc.protocol == "5" else mqtt.MQTTv311
        kw: dict[str, Any] = {} if proto == mqtt.MQTTv5 else {"clean_session": True}
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=proto, **kw)
        if mc.username:
            c.username_pw_set(mc.username, mc.password or None)
        if mc.tls:
            try:
                c.tls_set(ca_certs=str(Path(mc.ca_file).expanduser()) if mc.ca_file else None,
                          cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError) as e:
                raise UserError(f"mqtt.ca_file: {mc.ca_file or 'system store'} not usable for TLS ({e}); "
                                "expected a CA certificate (PEM)") from None
        c.will_set(topics.availability, OFFLINE, qos=QOS_STATE, retain=True)
        c.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        # Held messages are bounded; all of them count as in flight, so paho re-sends every one
        # after a reconnect.
        c.max_queued_messages_set(mc.queue_limit)
        c.max_inflight_messages_set(mc.queue_limit)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        self.client = c

    def start(self) -> None:
        # connect_async: the first attempt happens in paho's thread, so a broker that is down,
        # or a host name that takes long to resolve, never delays the daemon's start.
        self.client.connect_async(self.mc.host, self.mc.port, self.mc.keepalive)
        self.client.loop_start()

    def is_connected(self) -> bool:
        return self.client.is_connected()

    def publish(self, topic: str, payload: bytes | str, qos: int, retain: bool = False,
                hold: bool = True) -> bool:
        """Hand one message to the client; False when it was dropped. `hold=False`: do not
        keep it for a broker that is away (it is counted as dropped)."""
        if not hold and not self.client.is_connected():
            with self._lock:
                self._figures.dropped += 1
            return False
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            rc = info.rc
        except (ValueError, OSError, RuntimeError) as e:
            log.debug("publish to %s failed: %s", topic, e)
            rc = MQTTErrorCode.MQTT_ERR_UNKNOWN
        # A QoS 1 message answered NO_CONN is held by paho and sent after the reconnect.
        ok = rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (qos > 0 and rc == MQTTErrorCode.MQTT_ERR_NO_CONN)
        with self._lock:
            if ok:
                self._figures.published += 1
            else:
                self._figures.dropped += 1
        return ok

    def close(self, timeout: float = 1.0) -> None:
        """Say offline (a clean disconnect sends no will), disconnect, stop paho's thread."""
        if self.client.is_connected():
            info = self.client.publish(self.topics.availability, OFFLINE, qos=QOS_STATE, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (paho's thread) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not self._logged_down:
                log.warning("mqtt: broker %s:%d refused the connection: %s (retrying)",
                            self.mc.host, self.mc.port, reason)
                self._logged_down = True
            return
        with self._lock:
            self._figures.connected = True
            self._figures.connects += 1
        self._logged_down = False
        log.info("mqtt: connected to %s:%d as %s", self.mc.host, self.mc.port, self.topics.base)
        self.resync.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            was = self._figures.connected
            self._figures.connected = False
        if was and reason.is_failure:
            log.warning("mqtt: lost the broker (%s); reconnecting with backoff", reason)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._logged_down:
            log.warning("mqtt: broker %s:%d unreachable; retrying every %d-%d s in the background",
                        self.mc.host, self.mc.port, RECONNECT_MIN_S, RECONNECT_MAX_S)
            self._logged_down = True


class EventsExtension(StageThread):
    def __init__(self, cfg: Config, device: str, stats_snapshot: Any, model_name: str = ""):
        super().__init__("events")
        mc = cfg.mqtt
        self.mc = mc
        self.device = device
        self.topics = Topics(mc.prefix, device, mc.discovery_prefix)
        self._stats_snapshot = stats_snapshot
        self._model_name = model_name
        self._jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.http.jpeg_quality)]
        self.tracker = Tracker(TrackerConfig(frozenset(mc.labels), mc.min_frames, mc.max_missing, mc.iou))
        self._lock = threading.Lock()
        self.figures = Figures()
        self.link = MqttLink(mc, self.topics, f"edgedetect-{device}", self.figures, self._lock)
        self._queue: queue.Queue[_Item] = queue.Queue(QUEUE_FRAMES)
        self._stats_lock = threading.Lock()
        self._pending_stats: dict[str, Any] | None = None
        self._last_stats: dict[str, Any] | None = None
        self._counts: dict[str, int] = {label: 0 for label in mc.labels}
        self._discovered: set[str] = set()
        self._frame_size = (0, 0)  # (height, width) of the latest frame, for events ended at stop

    # --- hooks (other threads; must return at once) ------------------------------------------------

    def on_result(self, result: Result) -> None:
        if self._stop.is_set() or result.frame.index < 0:
            return
        # A still frame the motion gate let through uninferred is no new evidence: the tracker
        # counts neither a hit nor a miss.
        if result.held:
            return
        try:
            self._queue.put_nowait(_Item(result.frame.index, result.frame.t_capture, result.frame.image,
                                         result.detections))
        except queue.Full:
            with self._lock:
                self.figures.frames_dropped += 1

    def on_stats(self, snap: dict[str, Any]) -> None:
        with self._stats_lock:
            self._pending_stats = snap

    def stats(self) -> dict[str, Any]:
        with self._lock:
            return self.figures.as_dict()

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        self.link.start()
        super().start()

    # --- the events thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item: _Item | None = self._queue.get(timeout=0.1)
                except queue.Empty:
                    item = None
                if self.link.resync.is_set():
                    self.link.resync.clear()
                    self._resync()
                if item is not None:
                    self._process(item)
                with self._stats_lock:
                    snap, self._pending_stats = self._pending_stats, None
                if snap is not None:
                    self._last_stats = snap
                    self._publish_stats(snap)
        except Exception:  # noqa: BLE001 - events must never take detection down
            log.exception("events thread failed; MQTT publishing stopped")
        finally:
            self._shutdown()

    def _shutdown(self) -> None:
        try:
            for ev in self.tracker.flush():
                self._publish_event(ev, None)
            self._publish_counts(self.tracker.counts(), force=False)
        finally:
            self.link.close()

    def _process(self, item: _Item) -> None:
        events = self.tracker.update(item.detections, item.t, item.index)
        if not events:
            return
        for ev in events:
            self._publish_event(ev, item)
        self._publish_counts(self.tracker.counts(), force=False)

    def _publish_event(self, ev: TrackEvent, item: _Item | None) -> None:
        h, w = item.image.shape[:2] if item is not None else self._frame_size
        if item is not None:
            self._frame_size = (h, w)
        snapshot = self.mc.snapshot and item is not None and ev.kind in ("start", "update")
        payload = event_json(ev, self.device, w, h, snapshot)
        self.link.publish(self.topics.events, json.dumps(payload), QOS_STATE)
        with self._lock:
            f = self.figures
            if ev.kind == "start":
                f.events_started += 1
                f.started_by_label[ev.label] = f.started_by_label.get(ev.label, 0) + 1
            elif ev.kind == "end":
                f.events_ended += 1
                f.ended_by_label[ev.label] = f.ended_by_label.get(ev.label, 0) + 1
        if snapshot and item is not None:
            jpg = self._snapshot(item.image, ev)
            if jpg:
                self.link.publish(self.topics.snapshot(ev.label), jpg, QOS_BULK, retain=True, hold=False)

    def _snapshot(self, image: np.ndarray, ev: TrackEvent) -> bytes:
        """The object with some surroundings, its box drawn: a few kB, not a whole frame."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = crop_region(ev.box, w, h)
        img = image[y0:y1, x0:x1].copy()
        bx0, by0, bx1, by1 = (round(v * s) for v, s in zip(ev.box, (w, h, w, h), strict=True))
        cv2.rectangle(img, (bx0 - x0, by0 - y0), (bx1 - x0, by1 - y0), (0, 200, 255), 2)
        ok, buf = cv2.imencode(".jpg", img, self._jpeg_params)
        return buf.tobytes() if ok else b""

    def _publish_counts(self, live: dict[str, int], force: bool) -> None:
        """Retained per-label counts, only those that changed (all of them with force). Never
        held while the broker is away: the current figures are sent again on reconnect."""
        with self._lock:
            self.figures.live = dict(live)
        current = {label: 0 for label in self._counts}
        current.update(live)
        if not self.link.is_connected():
            self._counts.update(current)
            return
        for label, n in current.items():
            if force or self._counts.get(label) != n:
                if self.mc.discovery and label not in self._discovered:
                    self._discover_label(label)
                self.link.publish(self.topics.count(label), str(n), QOS_STATE, retain=True)
        self._counts.update(current)

    def _publish_stats(self, snap: dict[str, Any]) -> None:
        self.link.publish(self.topics.stats, json.dumps(snap, default=str), QOS_BULK, retain=True, hold=False)

    def _resync(self) -> None:
        """After every (re)connect: online, discovery, current counts and stats."""
        self.link.publish(self.topics.availability, ONLINE, QOS_STATE, retain=True)
        if self.mc.discovery:
            self._discovered.clear()
            snap = self._last_stats or self._stats_snapshot()
            for topic, config in discovery_configs(self.topics, self.device, self._model_name, snap):
                self.link.publish(topic, json.dumps(config), QOS_STATE, retain=True)
            for label in self._counts:
                self._discover_label(label)
        self._publish_counts(self.tracker.counts(), force=True)
        if self._last_stats is not None:
            self._publish_stats(self._last_stats)

    def _discover_label(self, label: str) -> None:
        self._discovered.add(label)
        for topic, config in label_discovery(self.topics, self.device, self._model_name, label):
            self.link.publish(topic, json.dumps(config), QOS_STATE, retain=True)


def crop_region(box: tuple[float, float, float, float], width: int, height: int) -> tuple[int, int, int, int]:
    """Pixel region around a normalised box: half its size again on every side, at least
    SNAPSHOT_MIN_PX square where the frame allows, inside the frame."""
    x0, y0, x1, y1 = box[0] * width, box[1] * height, box[2] * width, box[3] * height
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
    cw = min(width, max(2 * (x1 - x0), SNAPSHOT_MIN_PX))
    ch = min(height, max(2 * (y1 - y0), SNAPSHOT_MIN_PX))
    left = min(max(0.0, cx - cw / 2), width - cw)
    top = min(max(0.0, cy - ch / 2), height - ch)
    return round(left), round(top), round(left + cw), round(top + ch)


def event_json(ev: TrackEvent, device: str, width: int, height: int, snapshot: bool) -> dict[str, Any]:
    """The JSON of one event message; times are wall-clock seconds since the epoch."""
    now_m, now_w = clock.now(), clock.wall()

    def wall(t: float | None) -> float | None:
        return None if t is None else round(now_w - (now_m - t), 3)

    def px(box: tuple[float, float, float, float]) -> list[int]:
        return [round(box[0] * width), round(box[1] * height), round(box[2] * width), round(box[3] * height)]

    start = wall(ev.start_t)
    return {
        "type": ev.kind,
        "id": f"{start:.3f}-{ev.seq}",
        "seq": ev.seq,
        "device": device,
        "label": ev.label,
        "score": round(ev.score, 4),
        "top_score": round(ev.top_score, 4),
        "box": px(ev.box),
        "top_box": px(ev.top_box),
        "frame_size": [width, height],
        "start_time": start,
        "last_seen": wall(ev.last_t),
        "end_time": wall(ev.end_t),
        "frames": ev.frames,
        "frame": ev.frame,
        "has_snapshot": snapshot,
    }


def _device_block(topics: Topics, device: str, model: str) -> dict[str, Any]:
    return {"identifiers": [topics.node], "name": device, "manufacturer": "edgedetect",
            "model": model or "edgedetect", "sw_version": __version__}


def _entity(topics: Topics, device: str, model: str, object_id: str, name: str, state_topic: str,
            **extra: Any) -> dict[str, Any]:
    return {
        "name": name,
        "unique_id": f"{topics.node}_{object_id}",
        "object_id": f"{topics.node}_{object_id}",
        "state_topic": state_topic,
        "availability_topic": topics.availability,
        "payload_available": ONLINE,
        "payload_not_available": OFFLINE,
        "device": _device_block(topics, device, model),
        **extra,
    }


def discovery_configs(topics: Topics, device: str, model: str,
                      snap: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """Home Assistant MQTT discovery for the figures in the stats topic. Temperature and
    throttling only where the hardware reports them."""
    diag = {"entity_category": "diagnostic"}
    out = [
        (topics.discovery("sensor", "inference_fps"), _entity(
            topics, device, model, "inference_fps", "Inference FPS", topics.stats,
            value_template="{{ value_json.inference_fps }}", unit_of_measurement="fps",
            state_class="measurement", icon="mdi:speedometer", **diag)),
        (topics.discovery("sensor", "camera_fps"), _entity(
            topics, device, model, "camera_fps", "Camera FPS", topics.stats,
            value_template="{{ value_json.camera_fps }}", unit_of_measurement="fps",
            state_class="measurement", icon="mdi:camera", **diag)),
        (topics.discovery("sensor", "inference_ms"), _entity(
            topics, device, model, "inference_ms", "Inference time", topics.stats,
            value_template="{{ value_json.inference_ms.p50 | default(0) }}", unit_of_measurement="ms",
            device_class="duration", state_class="measurement", **diag)),
    ]
    if "temperature_c" in snap:
        out.append((topics.discovery("sensor", "cpu_temperature"), _entity(
            topics, device, model, "cpu_temperature", "CPU temperature", topics.stats,
            value_template="{{ value_json.temperature_c }}", unit_of_measurement="°C",
            device_class="temperature", state_class="measurement", **diag)))
    if "throttled" in snap:
        out.append((topics.discovery("binary_sensor", "throttled"), _entity(
            topics, device, model, "throttled", "Throttled", topics.stats,
            # Bits 0-3 of the firmware word: under-voltage, capped, throttled, soft limit now.
            value_template="{{ 'ON' if (value_json.throttled | int(0, 16)) % 16 else 'OFF' }}",
            payload_on="ON", payload_off="OFF", device_class="problem",
            json_attributes_topic=topics.stats,
            json_attributes_template="{{ {'flags': value_json.throttled_flags, "
                                     "'word': value_json.throttled} | tojson }}", **diag)))
    return out


def label_discovery(topics: Topics, device: str, model: str, label: str) -> list[tuple[str, dict[str, Any]]]:
    """A count sensor and an occupancy binary sensor for one label."""
    s = slug(label)
    return [
        (topics.discovery("sensor", f"{s}_count"), _entity(
            topics, device, model, f"{s}_count", f"{label} count", topics.count(label),
            unit_of_measurement=label, state_class="measurement")),
        (topics.discovery("binary_sensor", f"{s}_occupancy"), _entity(
            topics, device, model, f"{s}_occupancy", f"{label} detected", topics.count(label),
            value_template="{{ 'ON' if value | int(0) > 0 else 'OFF' }}", payload_on="ON", payload_off="OFF",
            device_class="occupancy")),
    ]


def attach(daemon: "Daemon") -> EventsExtension | None:
    cfg = daemon.cfg
    if not cfg.mqtt.enabled:
        return None
    device = device_name(cfg)
    check_config(cfg.mqtt, device)
    ext = EventsExtension(cfg, device, daemon.stats.snapshot, daemon.stats.model_name)
    daemon.stats.extra["mqtt"] = ext.stats
    daemon.publisher.add_listener(ext.on_result)
    daemon.reporter.sinks.append(ext.on_stats)
    return ext
