"""[record]: tracked events kept on disk — snapshots, clips, the index — for the events thread.

The events thread (sinks/events.py) owns the tracker; for each start, update and end of an event
whose label [record] wants, it calls this module BEFORE it publishes the MQTT message, so the
snapshot a message refers to is on disk (renamed into place, fsync'ed) when the message leaves.

    start   the best-scoring frame so far: snapshot.jpg (whole frame, boxes drawn) and crop.jpg,
            then the index row, in the camera's open review item (a new item, with its clip
            begun by the camera's clip recorder, when none is open)
    update  new pictures only when the best score rose; figures in the index
    end     the end time; when it was the item's last live object, the clip runs post_s more,
            then the recorder hands it to the store and the item is finished with its boxes

Storage never stops detection: below min_free_mb (checked every few seconds, and at once after
a write that failed for want of space) recording pauses with one warning and resumes by itself
when there is room again; events that start meanwhile are counted, not kept. A folder the store
cannot use (it holds files edgedetect did not make, or it cannot be created) and writes that fail
for any other reason (a read-only or vanished drive) pause it the same way: one warning with the
reason, shown in stats and on /events, and attempts again at growing intervals until one works.

With [cameras] the store is shared and each camera has its own part of [record] (enabled,
labels, clips, pre_s, post_s, max_clip_s) and its own clip recorder, fed only its own frames.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import shutil
import sqlite3
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import cv2

from edgedetect import clock
from edgedetect.config import Config, RecordConfig, camera_configs
from edgedetect.pipeline.annotate import draw_result
from edgedetect.frames import Frame, Result
from edgedetect.storage import recorder as clips
from edgedetect.storage import review
from edgedetect.storage.history import History
from edgedetect.storage.ondisk import NotOurs
from edgedetect.system.files import StorageFull, is_full
from edgedetect.storage.store import EventStore
from edgedetect.tracking.events import ObjectEvent, Sighting, crop_region, event_id as make_id
from edgedetect.tracking.tracker import Box, TrackEvent

log = logging.getLogger("edgedetect.storage.record")

SPACE_CHECK_S = 2.0  # statvfs this often while events come
FULL_HEADROOM = 1e6  # after a write failed for want of space, resume with this much more room than then
RETENTION_S = 60.0  # age-based retention this often
RETRY_S = (5.0, 300.0)  # first and longest wait before opening or writing to a failed store again
STORE_ERRORS = (OSError, sqlite3.Error)


def wall(t: float) -> float:
    """A capture time (clock.now()) as wall-clock seconds."""
    return clock.wall() - (clock.now() - t)


def render(best: Sighting, label: str, jpeg_params: list[int]) -> tuple[bytes, bytes]:
    """(the whole frame with its boxes drawn, the crop around the object): JPEG bytes."""
    img = best.image
    h, w = img.shape[:2]
    full = draw_result(img.copy(), Result(Frame(-1, 0.0, img), best.detections))
    x0, y0, x1, y1 = (round(v * s) for v, s in zip(best.box, (w, h, w, h), strict=True))
    cv2.rectangle(full, (x0, y0), (x1, y1), (255, 255, 255), max(2, round(min(w, h) / 200)))
    cx0, cy0, cx1, cy1 = crop_region(best.box, w, h)
    crop = img[cy0:cy1, cx0:cx1].copy()
    cv2.rectangle(crop, (x0 - cx0, y0 - cy0), (x1 - cx0, y1 - cy0), (0, 200, 255), 2)
    ok1, a = cv2.imencode(".jpg", full, jpeg_params)
    ok2, b = cv2.imencode(".jpg", crop, jpeg_params)
    if not (ok1 and ok2):
        raise RuntimeError(f"JPEG encoding of the {label} snapshot failed")
    return a.tobytes(), b.tobytes()


@dataclass
class _Live:
    written_score: float  # score of the pictures on disk


@dataclass(frozen=True)
class _Camera:
    """What [record] keeps of one camera."""

    name: str
    enabled: bool
    labels: frozenset[str]  # empty: all
    recorder: clips.ClipRecorder | None  # None: no clips of this camera
    reviews: review.Grouper  # its review items (events thread)


def wanted(cfg: Config) -> bool:
    """Some camera keeps its events ([record] enabled, or enabled for one of [cameras])."""
    return any(c.record.enabled for _, c in camera_configs(cfg))


class Recording:
    def __init__(self, cfg: Config):
        rc = cfg.record  # the store's settings (dir, max_mb, max_days, min_free_mb) are shared
        self.rc = rc
        self.root = Path(rc.dir).expanduser()
        self._jpeg = [int(cv2.IMWRITE_JPEG_QUALITY), int(cfg.http.jpeg_quality)]
        self.min_free = rc.min_free_mb * 1e6
        cameras = camera_configs(cfg)
        why = clips.available() if any(c.record.enabled and c.record.clips for _, c in cameras) else None
        if why:
            log.warning("record: clips off: %s; snapshots and the index go on", why)
        self._review_numbers = itertools.count(1)
        self.cameras = {name: self._camera(name, c.record, why is None) for name, c in cameras}
        self._lock = threading.Lock()
        self._live: dict[str, _Live] = {}
        self.paused = False  # for want of space
        self.pauses = 0
        self.fault = ""  # why the store cannot be used now ("" while it can)
        self._retry_at = 0.0
        self._retry_s = RETRY_S[0]
        self.free_bytes = -1
        self._next_space = 0.0
        self._resume_free = 0.0  # set by a failed write: the free bytes needed to resume
        self._next_retention = 0.0
        self.stored = 0
        self.skipped = 0  # events not kept: recording paused
        self.write_errors = 0
        self.bytes_written = 0
        self.store: EventStore | None = None
        self._switches: Any = None  # each camera's `recordings` switch (set over MQTT), from attach()
        self._open(clock.now())

    # --- a store that cannot be used ----------------------------------------------------------

    def _open(self, now: float) -> None:
        """A new EventStore, and one small write to prove it can be written (an index on a drive
        that went read-only still opens)."""
        try:
            store = EventStore(self.root, self.rc.max_mb * 1e6, self.rc.max_days * 86400.0)
            try:
                store.probe()
            except BaseException:
                store.close()
                raise
        except NotOurs as e:
            self._set_fault(now, f"record.dir: {e}; recording is off: choose an empty or new folder, such as "
                                 f"{self.root / 'edgedetect'}")
        except STORE_ERRORS as e:
            self._set_fault(now, self.fault or f"record.dir: cannot keep events in {self.root} ({_reason(e)})")
        else:
            self.store = store
            self._clear_fault(f"record: the event store in {self.root} works again")

    def _failed(self, e: BaseException) -> None:
        """A write failed for a reason other than space: pause until a probe write works."""
        with self._lock:
            self.write_errors += 1
        if not self.fault:
            self._set_fault(clock.now(), f"record: writes to {self.root} fail ({_reason(e)})")

    def _set_fault(self, now: float, reason: str) -> None:
        if reason != self.fault:
            log.warning("%s; recording paused, detection, the viewer and MQTT go on", reason)
        with self._lock:
            self.fault = reason
        self._retry_at = now + self._retry_s
        self._retry_s = min(RETRY_S[1], self._retry_s * 2)

    def _clear_fault(self, message: str) -> None:
        if self.fault:
            log.info("%s: recording resumed", message)
        with self._lock:
            self.fault = ""
        self._retry_s = RETRY_S[0]

    def _retry(self, now: float) -> None:
        """The store opened anew (a drive remounted after an error needs new file descriptors);
        the old one keeps serving the history until the new one works."""
        if now < self._retry_at:
            return
        old = self.store
        self._open(now)
        if old is not None and self.store is not old:
            with contextlib.suppress(*STORE_ERRORS):
                old.close()

    # --- wiring -------------------------------------------------------------------------------

    def _camera(self, name: str, rc: RecordConfig, clips_work: bool) -> _Camera:
        recorder = None
        if rc.enabled and rc.clips and clips_work:
            # Review items are cut at max_clip_s; the recorder's own cap only guards against a
            # clip that never ends (an item's post-roll and the keyframe it is cut on come on top).
            hard_cap = rc.max_clip_s + rc.post_s + 2 * clips.KEYFRAME_S
            recorder = clips.ClipRecorder(rc.pre_s, rc.post_s, hard_cap, self._clip_done, name=f"recorder {name}",
                                          max_width=rc.max_width)
        grouper = review.Grouper(rc.pre_s if recorder is not None else 0.0, rc.post_s if recorder is not None else 0.0,
                                 rc.max_clip_s, lambda t: "r" + make_id(t, next(self._review_numbers)))
        return _Camera(name, rc.enabled, frozenset(rc.labels), recorder, grouper)

    @property
    def recorders(self) -> list[clips.ClipRecorder]:
        return [c.recorder for c in self.cameras.values() if c.recorder is not None]

    def attach(self, hooks: Any) -> None:
        self._switches = hooks.switches
        self._check_labels(hooks.labels)
        if self.recorders:
            hooks.on_frame(self.on_frame)
        hooks.add_figures("record", self.stats)
        History(lambda: self.store, self.stats, hooks.cfg).register(hooks.add_route)

    def on_frame(self, frame: Frame) -> None:
        """Capture threads: each frame to the pre-roll of its own camera."""
        cam = self.cameras.get(frame.camera)
        if cam is not None and cam.recorder is not None:
            cam.recorder.on_frame(frame)

    def _check_labels(self, model_labels: Sequence[str]) -> None:
        """One warning when [record] labels names a label the model cannot produce: such an
        event would never be kept."""
        if not model_labels:
            return
        have = set(model_labels)
        missing = sorted({lb for cam in self.cameras.values() if cam.enabled for lb in cam.labels} - have)
        if not missing:
            return
        nameless = all(lb.startswith("class ") for lb in model_labels)
        fix = ("the model has no label names (its labels are 'class 0', 'class 1', ...): give it a labels file "
               "with [model] labels = '/path/to/labels.txt', or name its classes that way in [record] labels"
               if nameless else f"choose from the model's labels, such as {', '.join(sorted(have)[:8])}")
        log.warning("record.labels: %s %s not among this model's labels, so no such event would ever be kept; %s",
                    ", ".join(repr(m) for m in missing), "is" if len(missing) == 1 else "are", fix)

    def wants(self, camera: str, label: str) -> bool:
        cam = self.cameras.get(camera)
        return (cam is not None and cam.enabled and (not cam.labels or label in cam.labels)
                and (self._switches is None or self._switches.on(camera, "recordings")))

    def start(self) -> None:
        for recorder in self.recorders:
            recorder.start()

    def stop(self) -> None:
        """From the events thread once its last events are handled: open review items finished."""
        now = clock.now()
        for cam in self.cameras.values():
            self._steps(cam, cam.reviews.flush(now))
        for recorder in self.recorders:
            recorder.stop()

    def join(self, timeout: float | None = None) -> None:
        deadline = None if timeout is None else clock.now() + timeout
        for recorder in self.recorders:
            recorder.join(None if deadline is None else max(0.05, deadline - clock.now()))

    def stats(self) -> dict[str, Any]:
        """Under "record" in /api/stats and the log line: few keys, flat."""
        with self._lock:
            reason = self.fault or (f"{self.free_bytes / 1e6:.0f} MB free in {self.root}, below min_free_mb = "
                                    f"{self.rc.min_free_mb:g}" if self.paused else None)
            out: dict[str, Any] = {
                "paused": self.paused or bool(self.fault), "reason": reason, "pauses": self.pauses,
                "free_mb": round(self.free_bytes / 1e6, 1) if self.free_bytes >= 0 else None,
                "events_stored": self.stored, "events_skipped": self.skipped, "write_errors": self.write_errors,
                "mb_written": round(self.bytes_written / 1e6, 2),
                "deleted": self.store.deleted if self.store is not None else 0,
            }
        recorders = self.recorders
        if recorders:
            out.update(clips.merged_stats(recorders))
        return out

    # --- space ------------------------------------------------------------------------------------

    def _space_ok(self, now: float) -> bool:
        """The store can be written and has room."""
        if self.fault:
            return False
        if now < self._next_space:
            return not self.paused
        self._next_space = now + SPACE_CHECK_S
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = 0
        ok = free >= max(self.min_free, self._resume_free)
        if ok:
            self._resume_free = 0.0
        with self._lock:
            self.free_bytes = free
            was = self.paused
            self.paused = not ok
            if self.paused and not was:
                self.pauses += 1
        if self.paused and not was:
            log.warning("record: %.0f MB free in %s (min_free_mb = %g)%s: recording paused; detection, the "
                        "viewer and MQTT go on", free / 1e6, self.root, self.rc.min_free_mb,
                        ", and a write failed for want of space" if self._resume_free else "")
        elif was and not self.paused:
            log.info("record: %.0f MB free in %s: recording resumed", free / 1e6, self.root)
        return ok

    def _full(self, e: BaseException) -> None:
        """A write failed for want of space (whatever statvfs said): pause until there is
        clearly more room than now."""
        now = clock.now()
        try:
            free = shutil.disk_usage(self.root).free
        except OSError:
            free = 0
        self._resume_free = max(self.min_free, free + FULL_HEADROOM)
        self._next_space = 0.0
        with self._lock:
            self.write_errors += 1
        self._space_ok(now)

    def tick(self, now: float) -> None:
        """Events thread, every loop: a failed store tried again, space, and age-based retention
        now and then."""
        if self.fault:
            self._retry(now)
            if self.fault:
                return
        self._space_ok(now)
        for cam in self.cameras.values():
            self._steps(cam, cam.reviews.due(now))
        if now >= self._next_retention:
            self._next_retention = now + RETENTION_S
            self._retention()

    def _retention(self) -> None:
        with self._lock:
            live = list(self._live) + [c.reviews.item.id for c in self.cameras.values() if c.reviews.item is not None]
        if self.store is None or self.fault:
            return
        try:
            self.store.enforce(live=live)
        except STORE_ERRORS as e:
            self._failed(e)
        except Exception:  # noqa: BLE001 - never stop events for it
            log.exception("record: retention failed")

    # --- events (events thread) --------------------------------------------------------------------

    def event(self, oe: ObjectEvent) -> dict[str, Any]:
        """Keep what changed; returns what the MQTT message may refer to ({} if nothing is kept)."""
        ev, event_id, zones, best = oe.track, oe.id, oe.zones, oe.best
        now = clock.now()
        try:
            if ev.kind == "start":
                return self._start(ev, event_id, zones, best, now, oe.camera)
            live = self._live.get(event_id)
            if live is None or self.store is None or self.fault:
                return {}
            pictures = None
            if best is not None and best.score > live.written_score and self._space_ok(now):
                pictures = render(best, ev.label, self._jpeg)
            end = wall(ev.end_t) if ev.kind == "end" and ev.end_t is not None else None
            try:
                kept = self.store.update(event_id, ev.top_score, wall(ev.last_t), zones, ev.frames, ev.top_box,
                                         *(pictures or (None, None)), end=end)
            except StorageFull as e:
                self._full(e)
                kept = True
                pictures = None
            if pictures is not None and kept and best is not None:
                live.written_score = best.score
                self._count_bytes(sum(map(len, pictures)))
            if ev.kind == "end":
                with self._lock:
                    self._live.pop(event_id, None)
                cam = self.cameras.get(oe.camera)
                if cam is not None:
                    self._steps(cam, cam.reviews.ended(event_id, ev.end_t if ev.end_t is not None else ev.last_t))
                self._retention()
            return {"snapshot": f"/events/{event_id}/snapshot.jpg"} if kept else {}
        except StorageFull as e:
            self._full(e)
            return {}
        except STORE_ERRORS as e:
            self._failed(e)
            return {}
        except Exception:  # noqa: BLE001 - a broken store must not stop MQTT or tracking
            with self._lock:
                self.write_errors += 1
            log.exception("record: event %s not kept", event_id)
            return {}

    def seen(self, camera: str, t: float, positions: list[tuple[str, Box]]) -> None:
        """Events thread: where the camera's live objects were seen in the frame captured at t."""
        cam = self.cameras.get(camera)
        if cam is not None and positions:
            cam.reviews.seen(t, positions)

    def _steps(self, cam: _Camera, steps: list[review.Step]) -> None:
        """What a camera's review items call for, done in the store and its clip recorder. A
        failure is handled as any write's (a paused store finishes no item: it is closed at
        its next start, from its objects)."""
        for step in steps:
            try:
                self._step(cam, step)
            except StorageFull as e:
                self._full(e)
            except STORE_ERRORS as e:
                self._failed(e)

    def _step(self, cam: _Camera, step: review.Step) -> None:
        store, recorder = self.store, cam.recorder
        if isinstance(step, review.Open):
            if store is None:
                raise OSError("the event store is not open")
            it = step.item
            store.begin_review(it.id, cam.name, wall(it.start_t))
            if recorder is not None:
                recorder.begin(it.id, it.start_t, store.clip_tmp(it.id))
        elif isinstance(step, review.Close):
            if recorder is not None:
                recorder.end(step.item.id, step.t)
        elif isinstance(step, review.Resume):
            if recorder is not None:
                recorder.resume(step.item.id)
        elif isinstance(step, review.Finish):
            self._finish(step.item, step.t)
        elif isinstance(step, review.Cut):
            self._finish(step.item, step.t)
            if store is None:
                return
            nxt = step.next
            store.begin_review(nxt.id, cam.name, wall(nxt.start_t))
            for event_id in step.continuing:
                store.join_review(nxt.id, event_id)
            if recorder is not None:
                recorder.begin(nxt.id, nxt.start_t, store.clip_tmp(nxt.id))

    def _finish(self, item: review.Item, t: float) -> None:
        if self.store is not None:
            boxes = json.dumps(review.boxes_json(item, wall), separators=(",", ":")).encode()
            self.store.end_review(item.id, wall(t), boxes)
            self._count_bytes(len(boxes))

    def _start(self, ev: TrackEvent, event_id: str, zones: Sequence[str], best: Sighting | None,
               now: float, camera: str) -> dict[str, Any]:
        if best is None or self.store is None or not self._space_ok(now):
            with self._lock:
                self.skipped += 1
            return {}
        snapshot, crop = render(best, ev.label, self._jpeg)
        start = float(event_id.split("-", 1)[0])
        cam = self.cameras[camera]
        try:
            self._steps_or_raise(cam, cam.reviews.started(event_id, ev.label, ev.start_t))
            item = cam.reviews.item
            self.store.begin(event_id, ev.seq, ev.label, ev.top_score, start, wall(ev.last_t), ev.top_box, zones,
                             snapshot, crop, ev.frames, camera, item.id if item is not None else None)
        except StorageFull as e:
            with self._lock:
                self.skipped += 1
            cam.reviews.ended(event_id, ev.start_t)
            self._full(e)
            return {}
        except BaseException:
            cam.reviews.ended(event_id, ev.start_t)
            raise
        self._count_bytes(len(snapshot) + len(crop))
        with self._lock:
            self._live[event_id] = _Live(best.score)
            self.stored += 1
        return {"snapshot": f"/events/{event_id}/snapshot.jpg"}

    def _steps_or_raise(self, cam: _Camera, steps: list[review.Step]) -> None:
        """A new event's steps (opening its item): a failure is the event's, and the item that
        could not be opened is forgotten."""
        try:
            for step in steps:
                self._step(cam, step)
        except BaseException:
            if any(isinstance(s, review.Open) for s in steps):
                cam.reviews.item = None
            raise

    def _count_bytes(self, n: int) -> None:
        with self._lock:
            self.bytes_written += n

    # --- clips (recorder thread) -----------------------------------------------------------------

    def _clip_done(self, review_id: str, path: Path | None, t0: float, t1: float, e: BaseException | None) -> None:
        if path is None:
            if e is not None and (is_full(e) or "No space" in str(e)):
                self._full(e)
                log.warning("record: the clip of %s was abandoned: %s", review_id, e)
            elif isinstance(e, STORE_ERRORS):
                self._failed(e)
            elif e is not None:
                log.warning("record: the clip of %s failed: %s", review_id, e)
            return
        if self.store is None:
            return
        try:
            size = path.stat().st_size
            if self.store.add_clip(review_id, path, wall(t0), wall(t1)):
                self._count_bytes(size)
                self._retention()
        except StorageFull as e:
            self._full(e)
        except STORE_ERRORS as e:
            self._failed(e)


def _reason(e: BaseException) -> str:
    """An error as one short, stable line (no file names, which differ from write to write)."""
    if isinstance(e, OSError) and e.strerror:
        return e.strerror
    return str(e) or type(e).__name__
