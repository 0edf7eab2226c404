"""Network cameras read with PyAV (rtsp://, and HTTP streams that are not MJPEG, such as MPEG-TS
or MP4): frames decoded for detection, packets passed on for clips.

A camera often offers two streams (Frigate's roles): a small one to detect on (`uri`) and the
full-size one to record (`record_uri`). The recorded stream's packets are never decoded here: they
ride on the frames as EncodedPacket and the recorder copies them into the clip's MP4, which costs
next to nothing next to decoding and re-encoding them. With one URL, that stream serves both.

Each stream is read by a thread of its own (`_Reader`), which opens the container and blocks in
FFmpeg; read() waits on what the readers hand over, so interrupt() ends a read at once whatever
FFmpeg is doing, and close() waits only briefly for a reader: a reader blocked in FFmpeg leaves
within its PyAV read timeout and closes its own container (no container is touched by two
threads). PyAV's timeout also ends a read from a camera that sends nothing: a stall, raised as
SourceError, and the capture thread reconnects with its backoff.

Packet times: a packet's pts, mapped onto clock.now() from the earliest plausible anchor (the
smallest arrival - pts offset seen so far), so that the burst FFmpeg hands over after probing (2-3 s
of packets at once) keeps the camera's spacing, and a pts that jumps (camera restart, wrap) starts
a new anchor at the packet's arrival.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from pathlib import Path
from typing import Any

import numpy as np

from edgedetect import clock
from edgedetect.errors import SourceError
from edgedetect.frames import EncodedPacket
from edgedetect.sources.base import Capture, redact

log = logging.getLogger("edgedetect.sources")

TIMEOUT_S = 5.0  # opening, and the longest silence before a stream counts as stalled
OPEN_WAIT_S = 15.0  # open(): connect, probe (2-3 s measured on loopback) and the first frame
POLL_S = 0.1  # how often a waiting read() looks at the stop flag
JOIN_S = 1.0  # close() waits this long for a reader; one blocked in FFmpeg leaves by itself later
JUMP_S = 3.0  # a packet this much older than its arrival by its pts: the camera's clock jumped
MAX_PENDING_PACKETS = 900  # record-stream packets between two reads (90 s at 10 fps); more dropped, counted
COPIED_CODECS = ("h264", "hevc")  # what an MP4 clip can hold as copied packets
V4L2M2M_DEVICE = "/dev/video10"  # the Pi's stateful H.264 decoder (bcm2835-codec)
HWACCELS = ("off", "auto", "v4l2m2m")
TRANSPORTS = ("tcp", "udp")


def decoder_choice(codec: str, hwaccel: str, device: str = V4L2M2M_DEVICE) -> tuple[str | None, str]:
    """(the hardware decoder to use or None for software, why) for one stream's codec."""
    if hwaccel == "off":
        return None, "software (hwaccel off)"
    import av

    name = f"{codec}_v4l2m2m"
    if not Path(device).exists():
        return None, f"software (hwaccel {hwaccel}: no {device})"
    if name not in av.codecs_available:
        return None, f"software (hwaccel {hwaccel}: this FFmpeg has no {name} decoder)"
    return name, f"{name} on {device}"


class _PtsClock:
    """A stream's pts mapped onto clock.now() (see the module's docstring)."""

    def __init__(self) -> None:
        self._anchor: float | None = None  # clock time of pts 0
        self._last = -1e18

    def t(self, pts: int | None, time_base: Any, arrival: float) -> float:
        if pts is None:
            t = arrival if self._anchor is None else self._last
        else:
            offset = float(pts * time_base)
            if self._anchor is None or arrival - offset < self._anchor or self._anchor + offset < arrival - JUMP_S:
                self._anchor = arrival - offset
            t = self._anchor + offset
        self._last = max(self._last, t)
        return t


class _Reader(threading.Thread):
    """One stream's thread: open, demux, and (for the detection stream) decode; stop() and join()."""

    def __init__(self, uri: str, options: dict[str, str], decode: bool, hwaccel: str, owner: "NetworkStream"):
        super().__init__(name=f"stream {redact(uri)}", daemon=True)
        self.uri, self.options, self.decode, self.hwaccel = uri, options, decode, hwaccel
        self._owner = owner
        self._stopping = threading.Event()
        self.error: str | None = None
        self.opened = threading.Event()
        self.decoder = ""

    def stop(self) -> None:
        self._stopping.set()

    def run(self) -> None:
        import av

        name = redact(self.uri)
        container = None
        try:
            t0 = clock.now()
            try:
                container = av.open(self.uri, options=self.options, timeout=(TIMEOUT_S, TIMEOUT_S))
            except (av.error.FFmpegError, OSError) as e:
                # A camera that connects but says nothing ends in FFmpeg's socket timeout, which
                # it reports as invalid data: the time taken tells the two apart.
                if isinstance(e, av.error.ExitError) or clock.now() - t0 >= TIMEOUT_S - 0.5:
                    raise SourceError(f"{name}: no answer in {TIMEOUT_S:.0f} s") from None
                raise SourceError(f"{name}: cannot open the stream ({getattr(e, 'strerror', None) or e})") from None
            if not container.streams.video:
                raise SourceError(f"{name}: the stream has no video")
            stream = container.streams.video[0]
            self._read(container, stream)
        except SourceError as e:
            self.error = str(e)
        except Exception as e:  # noqa: BLE001 - anything FFmpeg says ends this connection, in one line
            self.error = f"{name}: {type(e).__name__}: {e}"
        finally:
            if container is not None:
                container.close()
            self._owner._wake()

    def _decoder(self, stream: Any) -> Any:
        import av

        ctx = stream.codec_context
        hw, why = decoder_choice(ctx.name, self.hwaccel)
        if hw is not None:
            try:
                dec = av.CodecContext.create(hw, "r")
                if ctx.extradata:
                    dec.extradata = ctx.extradata
                dec.open()
            except Exception as e:  # noqa: BLE001 - a device that is there but refuses: software then
                hw, why = None, f"software ({hw} failed: {e})"
        if hw is None:
            dec = ctx
            dec.thread_count = 1  # the other core belongs to inference
        self.decoder = why
        return dec

    def _read(self, container: Any, stream: Any) -> None:
        import av

        ctx = stream.codec_context
        codec = ctx.name
        copy = codec in COPIED_CODECS
        dec = self._decoder(stream) if self.decode else None
        name = redact(self.uri)
        log.info("%s: %s %dx%d%s%s", name, codec, ctx.width, ctx.height,
                 f", decoded by {self.decoder}" if dec is not None else ", packets copied into clips",
                 "" if copy else f" ({codec} cannot be copied into an MP4 clip: clips encode the pictures)")
        self.opened.set()
        pts_clock = _PtsClock()
        extradata = bytes(ctx.extradata or b"")
        to_annexb = None
        if copy and extradata[:1] == b"\1":
            # MP4-style packets (length-prefixed, parameter sets in an avcC/hvcC box), as MP4 or
            # Matroska over HTTP give them: made Annex-B with the parameter sets inline before
            # each keyframe, the form a clip's first packet must have (see storage/recorder.py).
            to_annexb = av.bitstream.BitStreamFilterContext(f"{codec}_mp4toannexb", stream)
            extradata = b""
        demux = container.demux(stream)
        while not self._stopping.is_set():
            try:
                pkt = next(demux)
            except StopIteration:
                raise SourceError(f"{name}: the stream ended (the camera closed it, or went away)") from None
            except av.error.ExitError:
                if self._stopping.is_set():
                    return
                raise SourceError(f"{name}: no data for {TIMEOUT_S:.0f} s") from None
            except av.error.EOFError:
                raise SourceError(f"{name}: the stream ended (connection closed)") from None
            if pkt.size == 0:
                continue
            now = clock.now()
            t, key = pts_clock.t(pkt.pts, pkt.time_base, now), bool(pkt.is_keyframe)
            images = []
            if dec is not None:
                try:
                    # a copy: to_ndarray gives a view of a buffer PyAV owns (and reuses)
                    images = [np.array(f.to_ndarray(format="bgr24")) for f in dec.decode(pkt)]
                except av.error.InvalidDataError:
                    self._owner.corrupt += 1  # a packet lost on the way: the decoder picks up at the next keyframe
            packets = []
            if copy and self._owner.wants_packets(self):
                data = [bytes(p) for p in to_annexb.filter(pkt)] if to_annexb is not None else [bytes(pkt)]
                packets = [EncodedPacket(d, t, key, codec, ctx.width, ctx.height, extradata) for d in data]
            self._owner._hand_over(self, packets, images)


class NetworkStream:
    """A camera FFmpeg reads over the network; with `record_uri`, a second stream whose packets
    are recorded."""

    live = True

    def __init__(self, uri: str, record_uri: str = "", transport: str = "tcp", hwaccel: str = "off",
                 record: bool = True):
        self.uri, self.record_uri = uri, record_uri
        self.record = record  # False: no packets handed on, and record_uri never opened
        self.name = redact(uri)
        self.transport, self.hwaccel = transport, hwaccel
        self.corrupt = 0  # packets the decoder refused (a packet lost on the way)
        self._reported = 0  # of those, passed to on_corrupt
        self.on_corrupt: Any = None  # set by the capture thread: called once per refused packet
        self.packets_dropped = 0  # record-stream packets that waited too long for a read
        self._dropped_reported = 0  # of those, handed on with a Capture
        self._stop = threading.Event()
        self._cond = threading.Condition()
        self._image: np.ndarray | None = None
        self._packets: deque[EncodedPacket] = deque()
        self._readers: list[_Reader] = []
        self._detect: _Reader | None = None
        self._record: _Reader | None = None

    @property
    def fps(self) -> float | None:
        return None

    def _options(self) -> dict[str, str]:
        # FFmpeg's own socket timeout (microseconds) besides PyAV's, so a silent TCP connection
        # fails in FFmpeg too; a small probe, since the SDP already names the codec.
        options = {"timeout": str(int(TIMEOUT_S * 1e6)), "analyzeduration": "1000000"}
        if self.uri.startswith(("rtsp://", "rtsps://")):
            options["rtsp_transport"] = self.transport
        return options

    def open(self) -> None:
        self._stop.clear()
        self._detect = _Reader(self.uri, self._options(), True, self.hwaccel, self)
        self._readers = [self._detect]
        if self.record and self.record_uri and self.record_uri != self.uri:
            self._record = _Reader(self.record_uri, self._options(), False, "off", self)
            self._readers.append(self._record)
        for r in self._readers:
            r.start()
        deadline = clock.now() + OPEN_WAIT_S
        why = None
        with self._cond:
            while why is None and (self._image is None or not all(r.opened.is_set() for r in self._readers)):
                why = self._failure()
                if self._stop.is_set():
                    why = f"{self.name}: interrupted while opening"
                elif clock.now() > deadline:
                    why = f"{self.name}: no picture within {OPEN_WAIT_S:.0f} s of connecting"
                else:
                    self._cond.wait(POLL_S)
        if why is not None:
            self.close()
            raise SourceError(why)

    def wants_packets(self, reader: _Reader) -> bool:
        return self.record and reader is (self._record or self._detect)

    def _hand_over(self, reader: _Reader, packets: list[EncodedPacket], images: list[np.ndarray]) -> None:
        with self._cond:
            for packet in packets:
                if len(self._packets) >= MAX_PENDING_PACKETS:
                    self._packets.popleft()
                    if not self.packets_dropped:
                        log.warning("%s: no frame taken for %d packets; the oldest are dropped (gaps in clips)",
                                    self.name, MAX_PENDING_PACKETS)
                    self.packets_dropped += 1
                self._packets.append(packet)
            if images:
                self._image = images[-1]
                self._cond.notify_all()

    def _wake(self) -> None:
        with self._cond:
            self._cond.notify_all()

    def _failure(self) -> str | None:
        return next((r.error for r in self._readers if r.error is not None), None)

    def read(self) -> Capture | None:
        deadline = clock.now() + 2 * TIMEOUT_S
        with self._cond:
            why = self._failure()  # a record stream that failed fails the camera, frames or not
            while self._image is None and why is None:
                if self._stop.is_set():
                    return None
                why = self._failure()
                if why is None and clock.now() > deadline:  # packets come, but none decodes
                    why = f"{self.name}: no picture for {2 * TIMEOUT_S:.0f} s"
                if why is None:
                    self._cond.wait(POLL_S)
            if why is None:
                if self._stop.is_set():
                    return None
                image, self._image = self._image, None
                packets, self._packets = tuple(self._packets), deque()
                dropped, self._dropped_reported = self.packets_dropped - self._dropped_reported, self.packets_dropped
        if why is not None:
            self.close()
            raise SourceError(why)
        while self._reported < self.corrupt and self.on_corrupt is not None:
            self._reported += 1
            self.on_corrupt()
        return Capture(image, packets=packets, packets_dropped=dropped)

    def interrupt(self) -> None:
        self._stop.set()
        for r in self._readers:
            r.stop()
        self._wake()

    def close(self) -> None:
        for r in self._readers:
            r.stop()
        for r in self._readers:
            r.join(JOIN_S)
        self._readers = []
        with self._cond:
            self._image = None
            self._packets.clear()
