"""The events extension: a tracker per camera, whose events go to the store first, then MQTT.

    inference thread ──▶ listener ──▶ bounded queue ──▶ events thread: tracking (follow.py, the
    stats thread ─────▶ listener ──▶ latest stats ──┘     result's camera's), then storage
                                                          (record.py), then messaging
                                                          (publisher.py) ──▶ broker

The inference thread only appends to a bounded queue (a full queue drops the frame for the
tracker and counts it). Everything else runs in the events thread. Each camera has its own
Follower (its zones, masks and labels); their event numbers come from one counter, so that
event ids are unique in the daemon whatever camera an event is of.
"""

from __future__ import annotations

import dataclasses
import functools
import itertools
import logging
import queue
import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from edgedetect import clock
from edgedetect.config import Config, camera_configs
from edgedetect.extensions import Hooks
from edgedetect.messaging.discovery import name_clash
from edgedetect.messaging.link import MqttLink
from edgedetect.messaging.publisher import EventPublisher
from edgedetect.messaging.topics import Topics, check_config
from edgedetect.naming import device_name
from edgedetect.frames import Result
from edgedetect.pipeline.stage import StageThread
from edgedetect.storage import record
from edgedetect.storage.record import Recording
from edgedetect.tracking.events import ObjectEvent
from edgedetect.tracking.follow import Follower
from edgedetect.tracking.tracker import TrackerConfig
from edgedetect.tracking.zones import Scene

log = logging.getLogger("edgedetect.sinks.events")

QUEUE_FRAMES = 16  # results waiting for the events thread; each holds a reference to its frame


@dataclass(frozen=True, slots=True)
class _Item:
    """A result as the events thread needs it; created in microseconds in the inference thread."""

    camera: str
    index: int
    t: float  # capture time
    t_scene: float  # the time the tracker's motion model runs on (Frame.t_scene)
    image: np.ndarray
    detections: list
    weak: tuple


def tracker_settings(cfg: Config) -> dict[str, Any]:
    """[track] as the tracker takes it (low_score is the detector's: DetectFilter.weak_threshold)."""
    settings = dataclasses.asdict(cfg.track)
    del settings["low_score"]
    return settings


def tracked_labels(cfg: Config) -> frozenset[str]:
    """Labels a camera's tracker follows (`cfg` is that camera's): what MQTT wants and what
    [record] wants (empty: all)."""
    wanted = [list(c.labels) for c in (cfg.mqtt, cfg.record) if c.enabled]
    if not wanted or any(not w for w in wanted):
        return frozenset()
    return frozenset(label for w in wanted for label in w)


class EventsExtension(StageThread):
    """The one place objects are tracked into events, with MQTT on, [record] on, or both: each
    start/update/end goes to the event store first (its snapshot on disk) and then to MQTT."""

    def __init__(self, cfg: Config, device: str, stats_snapshot: Any, model_name: str = "",
                 recording: Recording | None = None):
        super().__init__("events")
        mc = cfg.mqtt
        self.recording = recording
        numbers = itertools.count(1)
        self.followers = {
            name: Follower(TrackerConfig(tracked_labels(cam_cfg), **tracker_settings(cfg)),
                           Scene.from_config(cam_cfg),
                           functools.partial(recording.wants, name) if recording is not None else None, name, numbers)
            for name, cam_cfg in camera_configs(cfg) if mc.enabled or cam_cfg.record.enabled}
        # Without [cameras] every result is the one camera's, whatever name its frame carries.
        self._only = next(iter(self.followers.values())) if not cfg.cameras else None
        self.mqtt = EventPublisher(cfg, device, model_name, stats_snapshot, self.followers) if mc.enabled else None
        self._queue: queue.Queue[_Item] = queue.Queue(QUEUE_FRAMES)
        self._stats_lock = threading.Lock()
        self._pending_stats: dict[str, Any] | None = None
        self._source_ended_at: float | None = None  # set by on_tick (main thread) while the source has ended
        self._ended_flushed = False

    @property
    def link(self) -> MqttLink | None:
        """The MQTT connection; None with MQTT off."""
        return self.mqtt.link if self.mqtt is not None else None

    # --- hooks (other threads; must return at once) ------------------------------------------------

    def on_result(self, result: Result) -> None:
        if self._stop.is_set() or result.frame.index < 0:
            return
        # A still frame the motion gate let through uninferred is no new evidence: the tracker
        # counts neither a hit nor a miss.
        if result.held:
            return
        try:
            self._queue.put_nowait(_Item(result.camera, result.frame.index, result.frame.t_capture,
                                         result.frame.t_scene,
                                         result.frame.image, result.detections, result.weak))
        except queue.Full:
            if self.mqtt is not None:
                self.mqtt.frame_dropped()

    def on_stats(self, snap: dict[str, Any]) -> None:
        with self._stats_lock:
            self._pending_stats = snap

    def stats(self) -> dict[str, Any]:
        return self.mqtt.stats() if self.mqtt is not None else {}

    def on_tick(self, progress: Any, _first_result: bool, now: float) -> None:
        """A file source that has ended (no --loop) sees no one leave: its open events end here."""
        if progress.state == "ended":
            if self._source_ended_at is None:
                self._source_ended_at = now
        else:
            self._source_ended_at, self._ended_flushed = None, False

    # --- lifecycle -------------------------------------------------------------------------

    def start(self) -> None:
        if self.mqtt is not None:
            self.mqtt.start()
        if self.recording is not None:
            self.recording.start()
        super().start()

    def join(self, timeout: float | None = None) -> None:
        t0 = clock.now()
        super().join(timeout)
        if self.recording is not None:
            self.recording.join(None if timeout is None else max(0.05, timeout - (clock.now() - t0)))

    # --- the events thread -------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    item: _Item | None = self._queue.get(timeout=0.1)
                except queue.Empty:
                    item = None
                if self.mqtt is not None:
                    self.mqtt.resync_if_reconnected()
                follower = None if item is None else self.followers.get(item.camera, self._only)
                if item is not None and follower is not None:
                    self._deliver(follower, follower.feed(item.index, item.t, item.image, item.detections, item.t_scene, item.weak))
                    if self.recording is not None:
                        self.recording.seen(follower.camera, item.t, follower.positions(item.index))
                elif (self._source_ended_at is not None and not self._ended_flushed
                      and clock.now() - self._source_ended_at >= 0.5):  # the last results are in
                    self._ended_flushed = True
                    self._end_all()
                if self.recording is not None:
                    self.recording.tick(clock.now())
                with self._stats_lock:
                    snap, self._pending_stats = self._pending_stats, None
                if snap is not None and self.mqtt is not None:
                    self.mqtt.publish_stats(snap)
        except Exception:  # noqa: BLE001 - events must never take detection down
            log.exception("events thread failed; MQTT publishing stopped")
        finally:
            self._shutdown()

    def _deliver(self, follower: Follower, events: list[ObjectEvent], flushed: bool = False) -> None:
        """Each event of one camera to the store first (its snapshot on disk), then to MQTT; then
        that camera's counts."""
        for ev in events:
            stored: dict[str, Any] = {}
            if self.recording is not None and self.recording.wants(ev.camera, ev.label):
                stored = self.recording.event(ev)
            if self.mqtt is not None and self.mqtt.wants(ev.label):
                self.mqtt.event(ev, stored)
        if self.mqtt is not None:
            self.mqtt.counts(follower.camera, changed=flushed or bool(events))

    def _end_all(self) -> None:
        for follower in self.followers.values():
            self._deliver(follower, follower.flush(), flushed=True)

    def _shutdown(self) -> None:
        try:
            self._end_all()
        finally:
            if self.recording is not None:
                self.recording.stop()
            if self.mqtt is not None:
                self.mqtt.close()


def attach(hooks: Hooks) -> EventsExtension | None:
    """With [mqtt] enabled, [record] enabled (for some camera), or both: a tracker per camera for both."""
    cfg = hooks.cfg
    device = device_name(cfg)
    if cfg.mqtt.enabled:
        check_config(cfg.mqtt, device)
        clash = name_clash(cfg, Topics(cfg.mqtt.prefix, device, cfg.mqtt.discovery_prefix), hooks.labels)
        if clash:  # found with the model's labels, after the config was accepted: detection goes on
            log.error("mqtt: %s; expected a topic and an id of its own for each; MQTT stays off", clash)
            cfg = dataclasses.replace(cfg, mqtt=dataclasses.replace(cfg.mqtt, enabled=False))
            if not record.wanted(cfg):
                return None
    recording = Recording(cfg) if record.wanted(cfg) else None
    ext = EventsExtension(cfg, device, hooks.figures, hooks.model_name, recording)
    if ext.mqtt is not None:
        ext.mqtt.control(hooks.switches)
        hooks.add_figures("mqtt", ext.stats)
    hooks.on_result(ext.on_result)
    hooks.on_stats(ext.on_stats)
    hooks.on_tick(ext.on_tick)
    if recording is not None:
        recording.attach(hooks)
    return ext
