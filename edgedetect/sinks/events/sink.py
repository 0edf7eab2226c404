"""The events sink: results -> tracker -> MQTT events, counts, snapshots and stats (see __init__)."""

from __future__ import annotations

import json
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from edgedetect import clock
from edgedetect.config import Config
from edgedetect.extensions import Hooks
from edgedetect.pipeline.frames import Result
from edgedetect.pipeline.stage import StageThread
from edgedetect.sinks.events.discovery import discovery_configs, label_discovery
from edgedetect.sinks.events.link import Figures, MqttLink
from edgedetect.sinks.events.topics import ONLINE, QOS_BULK, QOS_STATE, Topics, check_config, device_name
from edgedetect.sinks.events.tracker import TrackEvent, Tracker, TrackerConfig

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


def attach(hooks: Hooks) -> EventsExtension:
    cfg = hooks.cfg
    device = device_name(cfg)
    check_config(cfg.mqtt, device)
    ext = EventsExtension(cfg, device, hooks.figures, hooks.model_name)
    hooks.add_figures("mqtt", ext.stats)
    hooks.on_result(ext.on_result)
    hooks.on_stats(ext.on_stats)
    return ext
