"""Clips with pre-roll: every captured frame is encoded to H.264 as it arrives, the last
`pre_s` seconds of packets wait in memory, and each event's clip is those packets plus the
ones that follow until `post_s` after the event's end, written to an MP4 without re-encoding.
A clip is a review item's (storage/review.py): one at a time per camera, and never two over the
same seconds (a clip's pre-roll starts after the previous clip's last packet, and a clip that
begins while another is open takes over from it at the next keyframe).

    capture thread ──on_frame──▶ bounded queue ──▶ recorder thread: BGR→I420, libx264 (1 thread)
                                                        │  packets ──▶ pre-roll ring (bytes-bounded)
    events thread ──begin/end──▶ commands ──────────────┘  └──▶ open clips (.clip.mp4.tmp) ──▶ store

Why this way (docs/events.md has the figures): an MJPEG or raw pre-roll would hold ten times the
bytes, and re-encoding a clip after the event would cost its whole length in CPU at once; H.264
packets are small, and a clip is a copy of them into a container. x264 with preset superfast and
zerolatency emits each frame's packet at once (no B-frames, no look-ahead), and a keyframe every
second (forced, by capture time) lets a clip start within a second of `pre_s` before its event.
MP4/H.264 plays in Chromium's <video> and in every ordinary player. OpenCV's own VideoWriter
cannot do this: its FFmpeg has no H.264 encoder, and it writes to a file, not to packets in memory.

Time stamps are the frames' capture times (milliseconds), so a clip runs at the camera's rate
whatever the inference rate, and the gaps of a dropped frame stay gaps in time.

A camera that sends H.264 or H.265 of its own (an RTSP camera, the Pi's hardware encoder) gives
its packets on its frames (Frame.packets): those go into the pre-roll as they are, with their own
times, and none of that camera's frames is encoded here. A change of picture size (or of a copied
stream's parameters) starts a new encoder and logs one line; the open clip goes on in the same
file, the new parameter sets inline before the next keyframe (docs/events.md: why one file).

Nothing here touches the disk until an event begins, and then only the event's own clip file.
A clip is written under a temporary name, fsync'ed, and handed to the store, which renames it
into place and lists it; a write error (a full disk) abandons that clip and removes the file.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable

import cv2
import numpy as np

from edgedetect import clock
from edgedetect.frames import EncodedPacket, Frame
from edgedetect.pipeline.stage import StageThread

log = logging.getLogger("edgedetect.storage.recorder")

KEYFRAME_S = 1.0  # a keyframe at least this often (capture time)
PREROLL_SLACK_S = 2.0  # kept beyond pre_s: an event begins a few frames after its first sighting
QUEUE_FRAMES = 32  # frames waiting for the encoder; more are dropped and counted
PREROLL_MAX_BYTES = 32 * 1024 * 1024  # hard cap on the in-memory pre-roll whatever the bit rate
ENCODER = "libx264"
ENCODER_OPTIONS = {"preset": "superfast", "tune": "zerolatency", "crf": "28", "forced-idr": "1",
                   "g": "100000", "sc_threshold": "0"}
TIME_BASE = Fraction(1, 1000)
CLIP_EXT = "mp4"


def available() -> str | None:
    """None if clips can be made here, else why not (for one log line)."""
    try:
        import av  # noqa: F401
    except ImportError:
        return "PyAV is not installed (pip install av)"
    try:
        av.codec.Codec(ENCODER, "w")
    except Exception as e:  # noqa: BLE001 - any failure means no encoder
        return f"PyAV has no {ENCODER} encoder ({e})"
    if not hasattr(av.container.OutputContainer, "add_mux_stream"):
        return f"PyAV {av.__version__} is too old (needs 17 or newer)"
    return None


# What a clip's stream is set up from: (codec, width, height, extradata). Empty extradata: the
# parameter sets are inline (Annex-B), and FFmpeg's MP4 muxer builds the avcC/hvcC box from the
# first packet, which is a keyframe carrying them.
Params = tuple[str, int, int, bytes]


@dataclass(slots=True)
class Packet:
    t: float  # capture time, clock.now()
    pts: int  # milliseconds since the recorder's first frame
    key: bool
    data: bytes
    params: Params


@dataclass
class _Clip:
    clip_id: str
    start_t: float  # event start (capture time)
    path: Path
    end_t: float | None = None
    out: Any = None  # av OutputContainer
    stream: Any = None
    first_pts: int | None = None
    first_t: float = 0.0
    last_t: float = 0.0
    last_pts: int = -1
    packets: int = 0
    capped: bool = False  # reached max_clip_s
    handed_over: bool = False  # a newer clip takes over at the next keyframe
    codec: str = ""


@dataclass
class RecorderFigures:
    frames_encoded: int = 0
    frames_dropped: int = 0  # the encoder was behind: a gap in the clips, never in capture
    encode_ms_total: float = 0.0
    clips_written: int = 0
    clips_failed: int = 0
    preroll_bytes: int = 0
    preroll_s: float = 0.0
    open_clips: int = 0
    encoder: str = ""
    packets_copied: int = 0  # a camera's own packets put into the pre-roll, not encoded here
    encoder_restarts: int = 0  # the picture's size (or a copied stream's parameters) changed

    def add(self, other: "RecorderFigures") -> None:
        """`other`'s counts added to these (the figures of several cameras' recorders as one)."""
        for f in ("frames_encoded", "frames_dropped", "encode_ms_total", "clips_written", "clips_failed",
                  "preroll_bytes", "open_clips", "packets_copied", "encoder_restarts"):
            setattr(self, f, getattr(self, f) + getattr(other, f))

    def as_dict(self) -> dict[str, Any]:
        return {"clips_written": self.clips_written, "clips_failed": self.clips_failed,
                "encode_ms_mean": round(self.encode_ms_total / self.frames_encoded, 2) if self.frames_encoded else None,
                "frames_dropped": self.frames_dropped, "preroll_kb": round(self.preroll_bytes / 1024, 1),
                "open_clips": self.open_clips, "packets_copied": self.packets_copied,
                "encoder_restarts": self.encoder_restarts}


def merged_stats(recorders: list["ClipRecorder"]) -> dict[str, Any]:
    """The figures of several recorders (one per camera) as one set, as `stats()` gives them."""
    total = recorders[0].current()
    for r in recorders[1:]:
        total.add(r.current())
    return total.as_dict()


# on_done(clip id, path or None (failed), clip start t, clip end t, error or None)
Done = Callable[[str, Path | None, float, float, BaseException | None], None]


class ClipRecorder(StageThread):
    """One camera's pre-roll and clips."""

    def __init__(self, pre_s: float, post_s: float, max_clip_s: float, on_done: Done,
                 max_preroll_bytes: int = PREROLL_MAX_BYTES, name: str = "recorder", max_width: int = 0):
        super().__init__(name)
        self.pre_s, self.post_s, self.max_clip_s = pre_s, post_s, max_clip_s
        self._on_done = on_done
        self._max_bytes = max_preroll_bytes
        self._max_width = max_width  # x264 only: 0 keeps the captured size
        self._name = name
        self._frames: queue.Queue[Frame] = queue.Queue(QUEUE_FRAMES)
        self._cmds: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._ring: deque[Packet] = deque()
        self._ring_bytes = 0
        self._clips: dict[str, _Clip] = {}
        self._covered_pts = -1  # the last packet written to any clip
        self._enc: Any = None
        self._size = (0, 0)
        self._copying = False  # the camera gives packets of its own: never encode its frames
        self._params: Params | None = None  # of the newest packet
        self._t0 = 0.0
        self._last_pts = -1
        self._last_key_t = -1e18
        self._lock = threading.Lock()
        self.figures = RecorderFigures(encoder=f"{ENCODER} {ENCODER_OPTIONS['preset']}")

    # --- other threads (return at once) -------------------------------------------------------

    def on_frame(self, frame: Frame) -> None:
        """Capture thread: hand the (immutable) frame over; never waits."""
        if self._stop.is_set():
            return
        try:
            self._frames.put_nowait(frame)
        except queue.Full:
            with self._lock:
                self.figures.frames_dropped += 1

    def begin(self, clip_id: str, start_t: float, path: Path) -> None:
        """Events thread: a clip from pre_s before `start_t` (but after the previous clip); an
        open clip ends where this one starts."""
        self._cmds.put(("begin", (clip_id, start_t, path)))

    def end(self, clip_id: str, end_t: float) -> None:
        """Events thread: the last object was last seen at `end_t`; the clip runs post_s more."""
        self._cmds.put(("end", (clip_id, end_t)))

    def resume(self, clip_id: str) -> None:
        """Events thread: an object is back within the post-roll; the clip goes on."""
        self._cmds.put(("end", (clip_id, None)))

    def stats(self) -> dict[str, Any]:
        return self.current().as_dict()

    def current(self) -> RecorderFigures:
        """A copy of the figures as they are now."""
        with self._lock:
            self.figures.open_clips = len(self._clips)
            return dataclasses.replace(self.figures)

    # --- the recorder thread -----------------------------------------------------------------------

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                try:
                    frame: Frame | None = self._frames.get(timeout=0.1)
                except queue.Empty:
                    frame = None
                self._commands()
                if frame is not None:
                    self._encode(frame)
                self._finish_due(clock.now() if frame is None else None)
        except Exception:  # noqa: BLE001 - recording must never take detection down
            log.exception("recorder failed; clips stopped")
        finally:
            self._commands()
            for clip in list(self._clips.values()):
                self._close(clip)

    def _commands(self) -> None:
        while True:
            try:
                cmd, args = self._cmds.get_nowait()
            except queue.Empty:
                return
            if cmd == "begin":
                clip_id, start_t, path = args
                for other in self._clips.values():
                    other.handed_over = True
                clip = _Clip(clip_id, start_t, path)
                self._clips[clip_id] = clip
                self._open(clip)
            elif cmd == "end":
                clip_id, end_t = args
                clip = self._clips.get(clip_id)
                if clip is not None:
                    clip.end_t = end_t

    def _encoder(self, w: int, h: int) -> Any:
        import av

        if self._enc is not None and self._size == (w, h):
            return self._enc
        if self._enc is not None:
            self._changed(f"{self._size[0]}x{self._size[1]} to {w}x{h}; encoder restarted")
        enc = av.CodecContext.create(ENCODER, "w")
        enc.width, enc.height, enc.pix_fmt = w, h, "yuv420p"
        enc.time_base = TIME_BASE
        enc.options = dict(ENCODER_OPTIONS)
        enc.thread_count = 1  # the other core belongs to inference
        enc.open()
        self._enc, self._size = enc, (w, h)
        self._last_key_t = -1e18  # a new encoder starts on a keyframe
        return enc

    def _changed(self, what: str) -> None:
        """A size or parameter change: a new encoder (or new parameter sets) from here on, and
        the open clips go on in the same file, its new parameter sets inline before its next
        keyframe (decoders, FFmpeg's and the browsers', take those mid-stream)."""
        log.info("%s: picture changed from %s; open clips go on", self._name, what)
        with self._lock:
            self.figures.encoder_restarts += 1

    def _encode(self, frame: Frame) -> None:
        """One captured frame into the pre-roll: its own packets if the camera gave any, else its
        pixels encoded here."""
        if frame.packets:
            if not self._copying:
                self._start_copying()
            for p in frame.packets:
                self._copy(p)
            return
        if self._copying:
            return  # a camera that gives packets: frames between its packets carry none
        self._encode_pixels(frame)

    def _start_copying(self) -> None:
        """The camera's own encoder starts a frame or two after its first picture (the Pi's, an
        RTSP camera's record stream): what was encoded here until then leaves the pre-roll with
        the encoder, so that no clip mixes the two streams."""
        self._copying = True
        if self._enc is not None:
            self._enc = None
            self._ring.clear()  # all of it encoded here: nothing was copied before this
            self._ring_bytes = 0

    def _pts(self, t: float) -> int:
        if self._t0 == 0.0:
            self._t0 = t
        pts = max(self._last_pts + 1, round((t - self._t0) * 1000))
        self._last_pts = pts
        return pts

    def _copy(self, p: EncodedPacket) -> None:
        params: Params = (p.codec, p.width, p.height, p.extradata)
        data = p.data
        if self._params is not None and params != self._params:
            old = self._params
            self._changed(f"{old[0]} {old[1]}x{old[2]} to {p.codec} {p.width}x{p.height}")
            if old[0] != p.codec:  # one MP4 track holds one codec: the clips so far end here
                for clip in list(self._clips.values()):
                    self._close(clip)
                self._ring.clear()
                self._ring_bytes = 0
            elif p.key and _annexb(p.extradata) and not _has_parameter_sets(data, p.codec):
                data = p.extradata + data  # the new parameter sets inline, where decoders look for them
        if self._params is None or params != self._params:
            self._params = params
        if self._t0 == 0.0 and not p.key:
            return  # the first packet kept is a keyframe: nothing before it decodes
        self._add(Packet(p.t, self._pts(p.t), p.key, data, params))
        with self._lock:
            self.figures.packets_copied += 1

    def _scaled(self, img: np.ndarray) -> np.ndarray:
        """At most max_width wide (aspect kept), both sides even for 4:2:0."""
        h, w = img.shape[:2]
        if self._max_width and w > self._max_width:
            w2 = self._max_width - self._max_width % 2
            h2 = max(2, round(h * w2 / w / 2) * 2)
            # Bilinear below a halving: 0.3 ms for 768x576 -> 640x480 where INTER_AREA takes 1.5 ms
            # (measured here), and it does not alias until a pixel skips its neighbour.
            interp = cv2.INTER_AREA if w >= 2 * w2 else cv2.INTER_LINEAR
            return cv2.resize(img, (w2, h2), interpolation=interp)
        w2, h2 = w - w % 2, h - h % 2
        return img if (w2, h2) == (w, h) else img[:h2, :w2]

    def _encode_pixels(self, frame: Frame) -> None:
        import av

        t_start = clock.now()
        img = self._scaled(frame.image)
        h2, w2 = img.shape[:2]
        enc = self._encoder(w2, h2)
        pts = self._pts(frame.t_capture)
        yuv = cv2.cvtColor(np.ascontiguousarray(img), cv2.COLOR_BGR2YUV_I420)
        vf = av.VideoFrame.from_ndarray(yuv, format="yuv420p")
        vf.pts = pts
        vf.time_base = TIME_BASE
        if frame.t_capture - self._last_key_t >= KEYFRAME_S:
            vf.pict_type = av.video.frame.PictureType.I
            self._last_key_t = frame.t_capture
        params: Params = ("h264", w2, h2, b"")
        for p in enc.encode(vf):
            t = self._t0 + p.pts / 1000
            self._add(Packet(t, int(p.pts), bool(p.is_keyframe), bytes(p), params))
        with self._lock:
            self.figures.frames_encoded += 1
            self.figures.encode_ms_total += (clock.now() - t_start) * 1000

    def _add(self, pkt: Packet) -> None:
        self._ring.append(pkt)
        self._ring_bytes += len(pkt.data)
        for clip in list(self._clips.values()):
            if clip.handed_over and pkt.key and clip.packets:
                self._close(clip)
            elif clip.out is not None or not clip.handed_over:
                self._write(clip, pkt)
        self._trim(pkt.t)
        self._finish_due(pkt.t)

    def _trim(self, now: float) -> None:
        """Keep the newest keyframe at or before now - pre_s and what follows; and never more
        than the byte cap (whole seconds dropped from the front)."""
        ring = self._ring
        while True:
            second_key = next((i for i, p in enumerate(ring) if i > 0 and p.key), None)
            if second_key is None:
                break
            too_old = ring[second_key].t <= now - self.pre_s - PREROLL_SLACK_S
            too_big = self._ring_bytes > self._max_bytes
            if not (too_old or too_big):
                break
            for _ in range(second_key):
                self._ring_bytes -= len(ring.popleft().data)
        with self._lock:
            self.figures.preroll_bytes = self._ring_bytes
            self.figures.preroll_s = (ring[-1].t - ring[0].t) if ring else 0.0

    def _open(self, clip: _Clip) -> None:
        """The pre-roll: from the newest keyframe at or before start - pre_s (or the oldest one),
        after what an earlier clip holds. The file is made with its first packet (see _write)."""
        want = clip.start_t - self.pre_s
        keys = [i for i, p in enumerate(self._ring) if p.key and p.pts > self._covered_pts]
        if not keys:
            return  # the first keyframe to come starts the clip
        start = keys[0]
        for i in keys:
            if self._ring[i].t <= want:
                start = i
        for p in list(self._ring)[start:]:
            if not self._write(clip, p):
                return

    def _write(self, clip: _Clip, p: Packet) -> bool:
        import av

        if clip.capped or p.pts <= clip.last_pts or (clip.first_pts is None and p.pts <= self._covered_pts):
            return True
        if clip.first_pts is None:
            if not p.key:
                return True  # a clip starts on a keyframe
            self._open_empty(clip, p.params)
            if clip.out is None:
                return False
            clip.first_pts, clip.first_t = p.pts, p.t
            codec, extradata = p.params[0], p.params[3]
            if _annexb(extradata) and not _has_parameter_sets(p.data, codec):
                # FFmpeg's MP4 muxer builds the avcC/hvcC box from the first packet when the
                # stream has no extradata (a mux stream in PyAV has no way to set it): so the
                # parameter sets an RTSP camera sent in its SDP go in front of the first keyframe.
                p = dataclasses.replace(p, data=extradata + p.data)
        if p.t - clip.first_t > self.max_clip_s:
            clip.capped = True
            return True
        if clip.end_t is not None and p.t > clip.end_t + self.post_s:
            return True
        pk = av.Packet(p.data)
        pk.stream = clip.stream
        pk.time_base = TIME_BASE
        pk.pts = pk.dts = p.pts - clip.first_pts
        pk.is_keyframe = p.key
        try:
            clip.out.mux(pk)
        except Exception as e:  # noqa: BLE001 - a full disk, mostly
            self._fail(clip, e)
            return False
        clip.last_pts, clip.last_t = p.pts, p.t
        clip.packets += 1
        self._covered_pts = max(self._covered_pts, p.pts)
        return True

    def _open_empty(self, clip: _Clip, params: Params) -> None:
        import av

        codec, w, h, _ = params
        try:
            clip.path.parent.mkdir(parents=True, exist_ok=True)
            clip.out = av.open(str(clip.path), "w", format="mp4")
            clip.stream = clip.out.add_mux_stream(codec, width=w, height=h)
            clip.codec = codec
            clip.stream.time_base = TIME_BASE
        except Exception as e:  # noqa: BLE001
            self._fail(clip, e)

    def _finish_due(self, now: float | None) -> None:
        """Close the clips whose post-roll has passed (by the newest packet, or by the clock
        when no frame comes: a source that stopped)."""
        newest = self._ring[-1].t if self._ring else None
        for clip in list(self._clips.values()):
            if clip.capped:
                self._close(clip)
                continue
            if clip.end_t is None:
                continue
            due = clip.end_t + self.post_s
            if (newest is not None and newest >= due) or (now is not None and now >= due + 1.0):
                self._close(clip)

    def _close(self, clip: _Clip) -> None:
        self._clips.pop(clip.clip_id, None)
        if clip.out is None:
            self._fail(clip, None)
            return
        try:
            clip.out.close()
            if clip.packets == 0:
                raise RuntimeError("no video in the clip")
            if clip.codec == "hevc":
                _tag_hvc1(clip.path)
            from edgedetect.system.files import fsync_file

            fsync_file(clip.path)
        except Exception as e:  # noqa: BLE001
            clip.out = None
            self._fail(clip, e)
            return
        with self._lock:
            self.figures.clips_written += 1
        self._done(clip.clip_id, clip.path, clip.first_t, clip.last_t + self._frame_s(), None)

    def _frame_s(self) -> float:
        """One frame's duration at the current rate, for a clip's end time."""
        ring = self._ring
        if len(ring) >= 2 and ring[-1].t > ring[0].t:
            return (ring[-1].t - ring[0].t) / (len(ring) - 1)
        return 0.0

    def _fail(self, clip: _Clip, e: BaseException | None) -> None:
        self._clips.pop(clip.clip_id, None)
        if clip.out is not None:
            try:
                clip.out.close()
            except Exception:  # noqa: BLE001 - the disk is full: closing may fail too
                pass
            clip.out = None
        try:
            clip.path.unlink(missing_ok=True)
        except OSError:
            pass
        with self._lock:
            self.figures.clips_failed += 1
        self._done(clip.clip_id, None, 0.0, 0.0, e)

    def _done(self, clip_id: str, path: Path | None, t0: float, t1: float, e: BaseException | None) -> None:
        try:
            self._on_done(clip_id, path, t0, t1, e)
        except Exception:  # noqa: BLE001
            log.exception("recorder: clip %s not handed over", clip_id)


_CONTAINERS = (b"moov", b"trak", b"mdia", b"minf", b"stbl")


def _tag_hvc1(path: Path) -> None:
    """HEVC's sample entry renamed from FFmpeg's default `hev1` to `hvc1`, the tag Safari and the
    browsers that play HEVC in MP4 look for (FFmpeg's `-tag:v hvc1`; PyAV's mux streams cannot set
    a tag). Both entries have the same layout; only the four bytes of its type change."""
    with open(path, "r+b") as f:
        end = f.seek(0, 2)
        start = 0
        while start + 8 <= end:
            f.seek(start)
            head = f.read(16)
            size, kind = int.from_bytes(head[:4], "big"), head[4:8]
            if size == 1:
                size = int.from_bytes(head[8:16], "big")
            elif size == 0:
                size = end - start
            if size < 8:
                return
            if kind in _CONTAINERS:
                end, start = start + size, start + 8  # into the box
            elif kind == b"stsd":
                f.seek(start + 16 + 4)  # header, version/flags, entry count, first entry's size
                if f.read(4) == b"hev1":
                    f.seek(start + 20)
                    f.write(b"hvc1")
                return
            else:
                start += size


def _annexb(extradata: bytes) -> bool:
    """Parameter sets as start-code-prefixed NAL units (as RTSP's SDP gives them), not avcC/hvcC."""
    return extradata[:3] == b"\0\0\1" or extradata[:4] == b"\0\0\0\1"


def _has_parameter_sets(data: bytes, codec: str) -> bool:
    """Whether an Annex-B packet carries its SPS (H.264 NAL type 7, HEVC 33) inline."""
    for nal in data.split(b"\0\0\1")[1:]:
        if nal and ((codec == "h264" and nal[0] & 0x1F == 7) or (codec == "hevc" and (nal[0] >> 1) & 0x3F == 33)):
            return True
    return False
