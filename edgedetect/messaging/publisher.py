"""Track events to MQTT: each start/update/end as a message (with a snapshot), live counts per
label and per zone, stats, and Home Assistant discovery. Called from the events thread only.

EventPublisher is the daemon's part: the one connection (one client id, one availability topic),
stats, the figures under "mqtt", and the discovery of the daemon's figures. CameraPublisher is
one camera's part: its event messages and snapshots, its live counts per label and per zone,
and their discovery; with [cameras] each camera has topics and a Home Assistant device of its own.
SwitchControl (control.py) takes each camera's switches, once `control(switches)` is called."""

from __future__ import annotations

import json
import threading
from collections import Counter
from typing import TYPE_CHECKING, Any, Callable, Mapping

import cv2
import numpy as np

from edgedetect import clock
from edgedetect.config import Config
from edgedetect.messaging.control import SwitchControl
from edgedetect.messaging.discovery import discovery_configs, label_discovery, zone_discovery
from edgedetect.messaging.link import Figures, MqttLink
from edgedetect.messaging.topics import ONLINE, QOS_BULK, QOS_STATE, Topics
from edgedetect.tracking.events import ObjectEvent, crop_region
from edgedetect.tracking.follow import Follower
from edgedetect.tracking.tracker import TrackEvent

if TYPE_CHECKING:
    from edgedetect.switches import Switches


class EventPublisher:
    def __init__(self, cfg: Config, device: str, model_name: str, stats_snapshot: Callable[[], dict[str, Any]],
                 followers: Mapping[str, Follower]):
        mc = cfg.mqtt
        self.mc = mc
        self.device = device
        self.model_name = model_name
        self.topics = Topics(mc.prefix, device, mc.discovery_prefix)
        self._stats_snapshot = stats_snapshot
        self.jpeg_params = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.http.jpeg_quality)]
        self.lock = threading.Lock()
        self.figures = Figures()
        self.link = MqttLink(mc, self.topics, f"edgedetect-{device}", self.figures, self.lock)
        self._last_stats: dict[str, Any] | None = None
        # Without [cameras] the one camera publishes under the daemon's topics and device, as
        # it always has; with [cameras] each camera under its own name.
        self.cameras = {name: CameraPublisher(self, self.topics.for_camera(name) if cfg.cameras else self.topics,
                                              follower, name if cfg.cameras else "")
                        for name, follower in followers.items()}
        self._several = bool(cfg.cameras)
        self.switch_control: SwitchControl | None = None

    def control(self, switches: Switches) -> None:
        """Before start: take each camera's switches over MQTT, and honour its `snapshots` switch."""
        self.switch_control = SwitchControl(switches, self.link, self.topics,
                                            {name: cam.topics for name, cam in self.cameras.items()}, self._several)
        self.link.listen(self.switch_control.filters, self.switch_control.command)
        for cam in self.cameras.values():
            cam.switches = switches

    def start(self) -> None:
        self.link.start()

    def close(self) -> None:
        self.link.close()

    def wants(self, label: str) -> bool:
        return not self.mc.labels or label in self.mc.labels

    def frame_dropped(self) -> None:
        """A result the tracker never saw (the events thread behind); any thread."""
        with self.lock:
            self.figures.frames_dropped += 1

    def stats(self) -> dict[str, Any]:
        """The figures under "mqtt"; live objects summed over the cameras."""
        with self.lock:
            out = self.figures.as_dict()
            objects: Counter[str] = Counter()
            zones: dict[str, int] = {}
            for cam in self.cameras.values():
                objects.update(cam.live)
                zones.update(cam.zones)
        out["objects"] = dict(objects)
        out["zones"] = zones
        if self.switch_control is not None:
            out.update(self.switch_control.figures())
        return out

    def resync_if_reconnected(self) -> None:
        if self.link.resync.is_set():
            self.link.resync.clear()
            self._resync()

    def event(self, oe: ObjectEvent, stored: dict[str, Any]) -> None:
        """One event message; `stored` is what the event store kept of it (its snapshot's URL)."""
        self.cameras[oe.camera].event(oe, stored)

    def counts(self, camera: str, changed: bool) -> None:
        """One camera's live counts after its frame (`changed`: it started or ended events) or a flush."""
        self.cameras[camera].counts(changed)

    def publish_stats(self, snap: dict[str, Any]) -> None:
        self._last_stats = snap
        self._send_stats(snap)

    def count_event(self, ev: TrackEvent) -> None:
        with self.lock:
            f = self.figures
            if ev.kind == "start":
                f.events_started += 1
                f.started_by_label[ev.label] = f.started_by_label.get(ev.label, 0) + 1
            elif ev.kind == "end":
                f.events_ended += 1
                f.ended_by_label[ev.label] = f.ended_by_label.get(ev.label, 0) + 1

    def _send_stats(self, snap: dict[str, Any]) -> None:
        self.link.publish(self.topics.stats, json.dumps(snap, default=str), QOS_BULK, retain=True, hold=False)

    def _resync(self) -> None:
        """After every (re)connect: online, discovery, every camera's current counts, stats."""
        self.link.publish(self.topics.availability, ONLINE, QOS_STATE, retain=True)
        if self.mc.discovery:
            snap = self._last_stats or self._stats_snapshot()
            for topic, config in discovery_configs(self.topics, self.device, self.model_name, snap):
                self.link.publish(topic, json.dumps(config), QOS_STATE, retain=True)
        for cam in self.cameras.values():
            cam.resync()
        if self.switch_control is not None:
            self.switch_control.resync(self.device, self.model_name, self.mc.discovery)
        if self._last_stats is not None:
            self._send_stats(self._last_stats)


class CameraPublisher:
    def __init__(self, shared: EventPublisher, topics: Topics, follower: Follower, camera: str):
        self.shared = shared
        self.mc = shared.mc
        self.link = shared.link
        self.topics = topics
        self.follower = follower  # read for the live counts
        self.camera = camera  # named in each event message; "" without [cameras]
        self.switches: Switches | None = None  # its `snapshots` switch is read per event
        self._zone_counts: dict[tuple[str, str], int] = {}
        self._counts: dict[str, int] = {label: 0 for label in self.mc.labels}
        self._discovered: set[str] = set()
        self._discovered_zones: set[tuple[str, str]] = set()
        self._frame_size = (0, 0)  # (height, width) of the latest frame, for events ended at stop
        self.live: dict[str, int] = {}  # label -> live objects (under the shared lock)
        self.zones: dict[str, int] = {}  # "zone/label" ("camera/zone/label" with [cameras]) -> objects in it

    def wants(self, label: str) -> bool:
        return self.shared.wants(label)

    def event(self, oe: ObjectEvent, stored: dict[str, Any]) -> None:
        ev, image = oe.track, oe.image
        h, w = image.shape[:2] if image is not None else self._frame_size
        if image is not None:
            self._frame_size = (h, w)
        snapshot = (self.mc.snapshot and image is not None and ev.kind in ("start", "update")
                    and (self.switches is None or self.switches.on(self.follower.camera, "snapshots")))
        payload = event_json(ev, self.shared.device, w, h, snapshot, self.camera)
        payload["id"] = oe.id
        payload["zones"] = list(oe.zones)
        payload.update(stored)
        self.link.publish(self.topics.events, json.dumps(payload), QOS_STATE)
        self.shared.count_event(ev)
        if snapshot and image is not None:
            jpg = self._snapshot(image, ev)
            if jpg:
                self.link.publish(self.topics.snapshot(ev.label), jpg, QOS_BULK, retain=True, hold=False)

    def counts(self, changed: bool) -> None:
        if changed:
            self._publish_counts(self.follower.counts(), force=False)
        self._publish_zone_counts(force=False)

    def resync(self) -> None:
        """After every (re)connect: this camera's discovery and current counts."""
        if self.mc.discovery:
            self._discovered.clear()
            for label in self._counts:
                self._discover_label(label)
        self._publish_counts(self.follower.counts(), force=True)
        self._discovered_zones.clear()
        self._publish_zone_counts(force=True)

    def _snapshot(self, image: np.ndarray, ev: TrackEvent) -> bytes:
        """The object with some surroundings, its box drawn: a few kB, not a whole frame."""
        h, w = image.shape[:2]
        x0, y0, x1, y1 = crop_region(ev.box, w, h)
        img = image[y0:y1, x0:x1].copy()
        bx0, by0, bx1, by1 = (round(v * s) for v, s in zip(ev.box, (w, h, w, h), strict=True))
        cv2.rectangle(img, (bx0 - x0, by0 - y0), (bx1 - x0, by1 - y0), (0, 200, 255), 2)
        ok, buf = cv2.imencode(".jpg", img, self.shared.jpeg_params)
        return buf.tobytes() if ok else b""

    def _publish_counts(self, live: dict[str, int], force: bool) -> None:
        """Retained per-label counts, only those that changed (all of them with force). Never
        held while the broker is away: the current figures are sent again on reconnect."""
        live = {label: n for label, n in live.items() if self.wants(label)}
        with self.shared.lock:
            self.live = dict(live)
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

    def _zone_live(self) -> dict[tuple[str, str], int]:
        """Live (started) objects standing in each zone now, per label MQTT wants."""
        counts: dict[tuple[str, str], int] = {}
        for z in self.follower.scene.zones:
            for label in z.labels or frozenset(self.mc.labels):
                counts[(z.name, label)] = 0
        counts.update((key, n) for key, n in self.follower.live_in_zones().items() if self.wants(key[1]))
        return counts

    def _publish_zone_counts(self, force: bool) -> None:
        """Retained BASE/zone/ZONE/LABEL counts, only those that changed (all with force)."""
        if not self.follower.scene.zones:
            return
        current = {k: 0 for k in self._zone_counts}
        current.update(self._zone_live())
        where = f"{self.camera}/" if self.camera else ""
        with self.shared.lock:
            self.zones = {f"{where}{z}/{label}": n for (z, label), n in sorted(current.items())}
        if not self.link.is_connected():
            self._zone_counts.update(current)
            return
        for (zone, label), n in current.items():
            if force or self._zone_counts.get((zone, label)) != n:
                if self.mc.discovery and (zone, label) not in self._discovered_zones:
                    self._discovered_zones.add((zone, label))
                    for topic, config in zone_discovery(self.topics, self.shared.device, self.shared.model_name,
                                                        zone, label):
                        self.link.publish(topic, json.dumps(config), QOS_STATE, retain=True)
                self.link.publish(self.topics.zone_count(zone, label), str(n), QOS_STATE, retain=True)
        self._zone_counts.update(current)

    def _discover_label(self, label: str) -> None:
        self._discovered.add(label)
        for topic, config in label_discovery(self.topics, self.shared.device, self.shared.model_name, label):
            self.link.publish(topic, json.dumps(config), QOS_STATE, retain=True)


def event_json(ev: TrackEvent, device: str, width: int, height: int, snapshot: bool,
               camera: str = "") -> dict[str, Any]:
    """The JSON of one event message; times are wall-clock seconds since the epoch. `camera`
    (with [cameras]) follows "device"; without, the message has no "camera"."""
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
        **({"camera": camera} if camera else {}),
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
