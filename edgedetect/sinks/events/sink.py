"""The events sink: results -> tracker -> MQTT events, counts, snapshots and stats (see __init__)."""

from __future__ import annotations

import dataclasses
import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from edgedetect import clock
from edgedetect.config import Config
from edgedetect.extensions import Hooks
from edgedetect.pipeline.frames import Result
from edgedetect.pipeline.stage import StageThread
from edgedetect.sinks.events.discovery import discovery_configs, label_discovery, name_clash, zone_discovery
from edgedetect.sinks.events.link import Figures, MqttLink
from edgedetect.sinks.events.topics import (
    ONLINE,
    QOS_BULK,
    QOS_STATE,
    Topics,
    check_config,
    device_name,
)
from edgedetect.sinks.events.tracker import Tracker, TrackerConfig, TrackEvent
from edgedetect.sinks.events.zones import Scene

if TYPE_CHECKING:
    from edgedetect.sinks.events.record import Best, Recording

log = logging.getLogger("edgedetect.sinks.events")

QUEUE_FRAMES = 16  # results waiting for the events thread; each holds a reference to its frame
SNAPSHOT_MIN_PX = 160


@dataclass(frozen=True, slots=True)
class _Item:
    """A result as the events thread needs it; created in microseconds in the inference thread."""

    index: int
    t: float
    image: np.ndarray
    detections: list


def tracked_labels(cfg: Config) -> frozenset[str]:
    """Labels the one tracker follows: what MQTT wants and what [record] wants (empty: all)."""
    wanted = [list(c.labels) for c in (cfg.mqtt, cfg.record) if c.enabled]
    if not wanted or any(not w for w in wanted):
        return frozenset()
    return frozenset(label for w in wanted for label in w)


class EventsExtension(StageThread):
    """The one place objects are tracked into events, with MQTT on, [record] on, or both: each
    start/update/end goes to the event store first (its snapshot on disk) and then to MQTT."""

    def __init__(self, cfg: Config, device: str, stats_snapshot: Any, model_name: str = "",
                 recording: "Recording | None" = None):
        super().__init__("events")
        mc = cfg.mqtt
        self.mc = mc
        self.recording = recording
        self.scene = Scene.from_config(cfg)
        self.device = device
        self.topics = Topics(mc.prefix, device, mc.discovery_prefix)
        self._stats_snapshot = stats_snapshot
        self._model_name = model_name
        self._jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.http.jpeg_quality)]
        self.tracker = Tracker(TrackerConfig(tracked_labels(cfg), mc.min_frames, mc.max_missing, mc.iou))
        self._lock = threading.Lock()
        self.figures = Figures()
        self.link: MqttLink | None = (MqttLink(mc, self.topics, f"edgedetect-{device}", self.figures, self._lock)
                                      if mc.enabled else None)
        self._ids: dict[int, str] = {}  # event seq -> event id (fixed at its start)
        self._keys: dict[int, int] = {}  # event seq -> track key
        self._entered: dict[int, set[str]] = {}  # track key -> zones its object entered
        self._best: dict[int, "Best"] = {}  # track key -> best sighting (for [record])
        self._zone_counts: dict[tuple[str, str], int] = {}
        self._queue: queue.Queue[_Item] = queue.Queue(QUEUE_FRAMES)
        self._stats_lock = threading.Lock()
        self._pending_stats: dict[str, Any] | None = None
        self._last_stats: dict[str, Any] | None = None
        self._counts: dict[str, int] = {label: 0 for label in mc.labels} if mc.enabled else {}
        self._discovered: set[str] = set()
        self._discovered_zones: set[tuple[str, str]] = set()
        self._frame_size = (0, 0)  # (height, width) of the latest frame, for events ended at stop
        self._source_ended_at: float | None = None  # set by on_tick (main thread) while the source has ended
        self._ended_flushed = False

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

    def on_tick(self, progress: Any, _first_result: bool, now: float) -> None:
        """A file source that has ended (no --loop) sees no one leave: its open events end here."""
        if progress.state == "ended":
            if self._source_ended_at is None:
                self._source_ended_at = now
        else:
            self._source_ended_at, self._ended_flushed = None, False

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.link is not None:
            self.link.start()
        if self.recording is not None:
            self.recording.start()
        super().start()

    def join(self, timeout: float | None = None) -> None:
        t0 = clock.now()
        super().join(timeout)
        if self.recording is not None:
            self.recording.join(None if timeout is None else max(0.05, timeout - (clock.now() - t0)))

    def mqtt_wants(self, label: str) -> bool:
        return self.link is not None and (not self.mc.labels or label in self.mc.labels)

    # --- the events thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item: _Item | None = self._queue.get(timeout=0.1)
                except queue.Empty:
                    item = None
                if self.link is not None and self.link.resync.is_set():
                    self.link.resync.clear()
                    self._resync()
                if item is not None:
                    self._process(item)
                elif (self._source_ended_at is not None and not self._ended_flushed
                      and clock.now() - self._source_ended_at >= 0.5):  # the last results are in
                    self._ended_flushed = True
                    self._end_all()
                if self.recording is not None:
                    self.recording.tick(clock.now())
                with self._stats_lock:
                    snap, self._pending_stats = self._pending_stats, None
                if snap is not None and self.link is not None:
                    self._last_stats = snap
                    self._publish_stats(snap)
        except Exception:  # noqa: BLE001 - events must never take detection down
            log.exception("events thread failed; MQTT publishing stopped")
        finally:
            self._shutdown()

    def _end_all(self) -> None:
        for ev in self.tracker.flush():
            self._handle(ev, None)
        self._publish_counts(self.tracker.counts(), force=False)
        self._publish_zone_counts(force=False)

    def _shutdown(self) -> None:
        try:
            self._end_all()
        finally:
            if self.recording is not None:
                self.recording.stop()
            if self.link is not None:
                self.link.close()

    def _process(self, item: _Item) -> None:
        detections = item.detections if self.scene.empty else self.scene.keep(item.detections)
        events = self.tracker.update(detections, item.t, item.index)
        self._follow(item, detections)
        for ev in events:
            self._handle(ev, item)
        if events:
            self._publish_counts(self.tracker.counts(), force=False)
        if self.scene.zones:
            self._publish_zone_counts(force=False)
        alive = {tr.key for tr in self.tracker.tracks}
        for gone in [k for k in self._entered if k not in alive]:
            del self._entered[gone]
        for gone in [k for k in self._best if k not in alive]:
            del self._best[gone]

    def _follow(self, item: _Item, detections: list) -> None:
        """Per frame, for each object matched in it: the zones it stands in, and (for [record])
        its best-scoring sighting, a reference to the frame (frames are immutable)."""
        rec = self.recording
        for tr in self.tracker.tracks:
            if tr.last_frame != item.index or tr.misses:
                continue
            if self.scene.zones:
                here = self.scene.zones_at(tr.label, tr.score, tr.box)
                if here:
                    self._entered.setdefault(tr.key, set()).update(here)
            if rec is not None and rec.wants(tr.label) and tr.score >= tr.top_score and tr.box == tr.top_box:
                best = self._best.get(tr.key)
                if best is None or tr.score > best.score:
                    from edgedetect.sinks.events.record import Best

                    self._best[tr.key] = Best(tr.score, tr.box, item.image, tuple(detections))

    def _handle(self, ev: TrackEvent, item: _Item | None) -> None:
        """One event: to the store first (its snapshot on disk), then to MQTT."""
        if ev.kind == "start":
            self._ids[ev.seq] = event_id(ev.start_t, ev.seq)
            key = next((tr.key for tr in self.tracker.tracks if tr.seq == ev.seq), None)
            if key is not None:
                self._keys[ev.seq] = key
        ident = self._ids.get(ev.seq) or event_id(ev.start_t, ev.seq)
        key = self._keys.get(ev.seq)
        zones = sorted(self._entered.get(key, ())) if key is not None else []
        extra: dict[str, Any] = {"zones": zones}
        if self.recording is not None and self.recording.wants(ev.label):
            best = self._best.get(key) if key is not None else None
            extra.update(self.recording.event(ev, ident, zones, best))
        if self.mqtt_wants(ev.label):
            self._publish_event(ev, item, ident, extra)
        if ev.kind == "end":
            self._ids.pop(ev.seq, None)
            self._keys.pop(ev.seq, None)

    def _publish_event(self, ev: TrackEvent, item: _Item | None, ident: str | None = None,
                       extra: dict[str, Any] | None = None) -> None:
        assert self.link is not None
        h, w = item.image.shape[:2] if item is not None else self._frame_size
        if item is not None:
            self._frame_size = (h, w)
        snapshot = self.mc.snapshot and item is not None and ev.kind in ("start", "update")
        payload = event_json(ev, self.device, w, h, snapshot)
        if ident is not None:
            payload["id"] = ident
        payload.update(extra or {})
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
        if self.link is None:
            return
        live = {label: n for label, n in live.items() if self.mqtt_wants(label)}
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
        self._discovered_zones.clear()
        self._publish_zone_counts(force=True)
        if self._last_stats is not None:
            self._publish_stats(self._last_stats)

    def _zone_live(self) -> dict[tuple[str, str], int]:
        """Live (started) objects standing in each zone now, per label MQTT wants."""
        counts: dict[tuple[str, str], int] = {}
        for z in self.scene.zones:
            labels = z.labels or frozenset(self.mc.labels)
            for label in labels:
                counts[(z.name, label)] = 0
        for tr in self.tracker.tracks:
            if not tr.started or not self.mqtt_wants(tr.label):
                continue
            for name in self.scene.zones_at(tr.label, tr.score, tr.box):
                counts[(name, tr.label)] = counts.get((name, tr.label), 0) + 1
        return counts

    def _publish_zone_counts(self, force: bool) -> None:
        """Retained BASE/zone/ZONE/LABEL counts, only those that changed (all with force)."""
        if self.link is None or not self.scene.zones:
            return
        current = {k: 0 for k in self._zone_counts}
        current.update(self._zone_live())
        with self._lock:
            self.figures.zones = {f"{z}/{label}": n for (z, label), n in sorted(current.items())}
        if not self.link.is_connected():
            self._zone_counts.update(current)
            return
        for (zone, label), n in current.items():
            if force or self._zone_counts.get((zone, label)) != n:
                if self.mc.discovery and (zone, label) not in self._discovered_zones:
                    self._discovered_zones.add((zone, label))
                    for topic, config in zone_discovery(self.topics, self.device, self._model_name, zone, label):
                        self.link.publish(topic, json.dumps(config), QOS_STATE, retain=True)
                self.link.publish(self.topics.zone_count(zone, label), str(n), QOS_STATE, retain=True)
        self._zone_counts.update(current)

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


def event_id(start_t: float, seq: int) -> str:
    """An event's id: its start as wall-clock seconds (3 decimals) and its number, fixed once
    at its start so that every message, the store and the API name it alike."""
    now_m, now_w = clock.now(), clock.wall()
    return f"{now_w - (now_m - start_t):.3f}-{seq}"


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


def attach(hooks: Hooks) -> EventsExtension | None:
    """With [mqtt] enabled, [record] enabled, or both: one tracker for both."""
    cfg = hooks.cfg
    device = device_name(cfg)
    if cfg.mqtt.enabled:
        check_config(cfg.mqtt, device)
        clash = name_clash(cfg, Topics(cfg.mqtt.prefix, device, cfg.mqtt.discovery_prefix), hooks.labels)
        if clash:  # found with the model's labels, after the config was accepted: detection goes on
            log.error("mqtt: %s; expected a topic and an id of its own for each; MQTT stays off", clash)
            cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, enabled=False))
            if not cfg.record.enabled:
                return None
    recording = None
    if cfg.record.enabled:
        from edgedetect.sinks.events.record import Recording

        recording = Recording(cfg)
    ext = EventsExtension(cfg, device, hooks.figures, hooks.model_name, recording)
    if cfg.mqtt.enabled:
        hooks.add_figures("mqtt", ext.stats)
    hooks.on_result(ext.on_result)
    hooks.on_stats(ext.on_stats)
    hooks.on_tick(ext.on_tick)
    if recording is not None:
        recording.attach(hooks)
    return ext
