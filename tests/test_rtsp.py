"""RTSP cameras through PyAV, their packets copied into clips; clips over a size change; the
x264 width cap. A real RTSP server (GStreamer's, tests/rtspserver.py) serves H.264 MP4 files made
here, so every packet the camera sends is known and a clip's packets can be compared with them."""

from __future__ import annotations

import functools
import http.server
import logging
import os
import subprocess
import re
import shutil
import signal
import threading
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from conftest import VTEST
from daemonproc import DaemonProcess
from mjpegserver import MjpegCamera
from recordkit import record_config
from rtspserver import RtspCamera, make_h264_mp4
from edgedetect import clock
from edgedetect.config import load
from edgedetect.errors import ConfigError, SourceError
from edgedetect.frames import Frame
from edgedetect.sources.mjpeg import MjpegStream
from edgedetect.sources import stream as stream_module
from edgedetect.sources.stream import NetworkStream
from edgedetect.storage.recorder import ClipRecorder
from nalunits import nal_units
from recordkit import record_one_clip


def mp4_nals(path: Path) -> tuple[list[list[bytes]], set[bytes], tuple[int, int], int]:
    """(each packet's NAL units, the parameter sets in the avcC box, size, frames decoded)."""
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        packets = [nal_units(bytes(p)) for p in c.demux(s) if p.size]
        extra = bytes(s.codec_context.extradata or b"")
        size = (s.codec_context.width, s.codec_context.height)
    params = set()
    if extra[:1] == b"\1":  # avcC: SPS and PPS, each with a 2-byte length
        i, nsps = 6, extra[5] & 0x1F
        for _ in range(nsps):
            n = int.from_bytes(extra[i:i + 2], "big")
            params.add(extra[i + 2:i + 2 + n].rstrip(b"\0"))  # trailing_zero_8bits are no part of a NAL
            i += 2 + n
        for _ in range(extra[i]):
            n = int.from_bytes(extra[i + 1:i + 3], "big")
            params.add(extra[i + 3:i + 3 + n].rstrip(b"\0"))
            i += 2 + n
    with av.open(str(path)) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    return packets, params, size, decoded


@pytest.fixture(scope="module")
def media(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("rtsp")
    return {"main": make_h264_mp4(d / "main.mp4", VTEST, 300),
            "sub": make_h264_mp4(d / "sub.mp4", VTEST, 300, size=(384, 288))}


def read_for(src, seconds: float) -> list:
    out, end = [], clock.now() + seconds
    while clock.now() < end:
        out.append((clock.now(), src.read()))
    return out


def assert_copied(clip: Path, source: Path) -> tuple[int, int]:
    """Every NAL unit of the clip is one of the source file's, byte for byte, and every frame decodes."""
    got, got_params, _, decoded = mp4_nals(clip)
    want, want_params, _, _ = mp4_nals(source)
    known = {n for p in want for n in p} | want_params
    nals = [n for p in got for n in p]
    assert nals and all(n in known for n in nals), "a clip NAL unit that the camera never sent"
    assert got_params <= want_params
    assert decoded >= len(got) - 1  # PyAV's decode() keeps the last frame back (as in test_record's clip check)
    return len(got), decoded


@pytest.mark.slow
def test_rtsp_packets_copied_into_a_clip(media: dict[str, Path], tmp_path: Path) -> None:
    """One stream serves both: frames decoded for detection, its packets copied into the clip."""
    with RtspCamera({"/cam": media["main"]}) as cam:
        src = NetworkStream(cam.url("/cam"))
        src.open()
        try:
            captures = read_for(src, 5.0)
        finally:
            src.close()
    assert {cap.image.shape for _, cap in captures} == {(576, 768, 3)}
    f = record_one_clip(captures, 25, 35, tmp_path / "c1.mp4")
    packets, decoded = assert_copied(tmp_path / "c1.mp4", media["main"])
    print(f"\nclip: {packets} packets copied, {decoded} decoded; recorder: {f.frames_encoded} frames encoded, "
          f"{f.packets_copied} packets copied")
    assert f.frames_encoded == 0 and f.packets_copied >= 40
    assert 15 <= packets <= 45  # 1 s before the event's start to 1 s after its end, from a keyframe


def test_record_uri_packets_come_from_the_main_stream(media: dict[str, Path]) -> None:
    """Detection on the substream (384x288, decoded), packets of the main stream (768x576, not decoded)."""
    with RtspCamera({"/main": media["main"], "/sub": media["sub"]}) as cam:
        src = NetworkStream(cam.url("/sub"), cam.url("/main"))
        src.open()
        try:
            caps = [c for _, c in read_for(src, 3.0)]
        finally:
            src.close()
    packets = [p for c in caps for p in c.packets]
    want = {n for p in mp4_nals(media["main"])[0] for n in p}
    assert {c.image.shape for c in caps} == {(288, 384, 3)}
    assert {(p.width, p.height, p.codec) for p in packets} == {(768, 576, "h264")}
    assert len(packets) >= 20 and all(n in want for p in packets for n in nal_units(p.data, annexb=True))
    ts = [p.t for p in packets]
    assert ts == sorted(ts) and 0.05 < (ts[-1] - ts[0]) / (len(ts) - 1) < 0.15  # the camera's 10 fps


def test_packets_unread_too_long_are_dropped_once_warned_and_reported_by_the_next_read(
        media: dict[str, Path], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    """A capture thread that takes no frame for a while (a stall downstream): the record stream's
    packets stay bounded, the oldest go, one warning says so, and the next read tells how many."""
    monkeypatch.setattr(stream_module, "MAX_PENDING_PACKETS", 5)
    with RtspCamera({"/cam": media["main"]}) as cam:
        src = NetworkStream(cam.url("/cam"))
        src.open()
        try:
            with caplog.at_level(logging.WARNING, logger="edgedetect"):
                time.sleep(2.0)  # about 20 packets at the camera's 10 fps
                first = src.read()
                second = src.read()
        finally:
            src.close()
    warnings = [r.getMessage() for r in caplog.records if "oldest are dropped" in r.getMessage()]
    print(f"\nfirst read: {len(first.packets)} packets, {first.packets_dropped} dropped; second: "
          f"{len(second.packets)}, {second.packets_dropped}")
    assert len(first.packets) == 5 and first.packets_dropped >= 10 and second.packets_dropped == 0
    assert len(warnings) == 1


def test_without_clips_the_main_stream_is_never_opened_and_no_packets_ride(media: dict[str, Path]) -> None:
    """A camera whose clips are off ([record] enabled or clips false) reads its substream only."""
    with RtspCamera({"/main": media["main"], "/sub": media["sub"]}) as cam:
        src = NetworkStream(cam.url("/sub"), cam.url("/main"), record=False)
        src.open()
        try:
            caps = [c for _, c in read_for(src, 1.5)]
            readers = [r.name for r in src._readers]
        finally:
            src.close()
    assert len(caps) >= 5 and {c.image.shape for c in caps} == {(288, 384, 3)}
    assert not any(c.packets for c in caps) and len(readers) == 1 and src._record is None


@pytest.mark.slow
def test_interrupt_ends_a_read_from_a_silent_camera_and_a_stall_is_one_error(media: dict[str, Path]) -> None:
    """SIGSTOP freezes the server: the connection stays open and sends nothing."""
    with RtspCamera({"/cam": media["main"]}) as cam:
        src = NetworkStream(cam.url("/cam"))
        src.open()
        src.read()
        os.kill(cam.proc.pid, signal.SIGSTOP)
        try:
            threading.Timer(0.5, src.interrupt).start()
            t0 = time.monotonic()
            while src.read() is not None:  # frames already decoded may still come
                pass
            interrupted = time.monotonic() - t0
            t0 = time.monotonic()
            src.close()
            closed = time.monotonic() - t0
            src2 = NetworkStream(cam.url("/cam"))
            t0 = time.monotonic()
            with pytest.raises(SourceError) as e:
                src2.open()
            stalled = time.monotonic() - t0
        finally:
            os.kill(cam.proc.pid, signal.SIGCONT)
    print(f"\nread interrupted after {interrupted:.2f} s, closed in {closed:.2f} s; silent camera: {e.value} "
          f"after {stalled:.1f} s")
    assert interrupted < 1.0 and closed < 1.5
    assert "no answer in 5 s" in str(e.value) and stalled < 8


def test_hwaccel_auto_falls_back_to_software_and_says_so(media: dict[str, Path],
                                                        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, "edgedetect.sources")
    with RtspCamera({"/cam": media["sub"]}) as cam:
        src = NetworkStream(cam.url("/cam"), hwaccel="auto")
        src.open()
        src.close()
    lines = [r.getMessage() for r in caplog.records if "decoded by" in r.getMessage()]
    assert lines == [f"{cam.url('/cam')}: h264 384x288, decoded by software (hwaccel auto: no /dev/video10)"]


@pytest.mark.parametrize("text, expected", [
    ('hwaccel = "cuda"', "source.hwaccel: expected one of off, auto, v4l2m2m, got 'cuda'"),
    ('rtsp_transport = "http"', "source.rtsp_transport: expected one of tcp, udp, got 'http'"),
    ('hwacel = "auto"', "unknown key 'hwacel' (did you mean 'hwaccel'?)"),
    ('uri = "/dev/video0"\nrecord_uri = "rtsp://cam/main"',
     "source.record_uri: expected an rtsp:// URL beside an rtsp:// uri, got rtsp:// with uri a path"),
])
def test_bad_stream_settings_are_one_line(tmp_path: Path, text: str, expected: str) -> None:
    cfg = tmp_path / "e.toml"
    cfg.write_text(f"[source]\n{text}\n")
    with pytest.raises(ConfigError) as e:
        load(cfg)
    assert expected in str(e.value) and "\n" not in str(e.value)


@pytest.mark.slow
def test_a_size_change_keeps_the_clip_going(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """An MJPEG camera that switches between 640x480 and 320x240 every 2 s while an event lasts:
    one clip over the whole event, one log line and one new encoder per change."""
    caplog.set_level(logging.INFO)
    done = []
    rec = ClipRecorder(1.0, 1.0, 60.0, lambda *a: done.append(a), name="recorder cam")
    cam = MjpegCamera(VTEST, fps=10, frames=100, size=(640, 480)).start()
    src = MjpegStream(cam.url)
    sizes = []
    try:
        src.open()
        t_start = clock.now()
        i = 0
        while clock.now() - t_start < 9.0:
            phase = int((clock.now() - t_start) / 2.0)
            cam.size = (640, 480) if phase % 2 == 0 else (320, 240)
            cap = src.read()
            t = clock.now()
            if i == 15:
                rec.begin("s1", t, tmp_path / "s1.mp4")
                begun = t
            if t - t_start > 8.0 and "ended" not in locals():
                rec.end("s1", t)
                ended = t
            rec._commands()
            rec._encode(Frame(i, t, cap.image))
            if not sizes or sizes[-1] != cap.image.shape[:2]:
                sizes.append(cap.image.shape[:2])
            i += 1
    finally:
        src.close()
        cam.stop()
    rec._finish_due(clock.now() + 10)
    changes = len(sizes) - 1
    lines = [r.getMessage() for r in caplog.records if "picture changed" in r.getMessage()]
    assert len(done) == 1 and done[0][4] is None, done
    _, _, c0, c1, _ = done[0]
    with av.open(str(tmp_path / "s1.mp4")) as c:
        decoded = [f.width for f in c.decode(video=0)]
    print(f"\n{changes} size changes, {len(lines)} recorder lines, {rec.figures.encoder_restarts} encoders rebuilt; "
          f"clip {c1 - c0:.1f} s for an event of {ended - begun:.1f} s (+1 s pre, +1 s post), {len(decoded)} frames "
          f"decoded at widths {sorted(set(decoded))}")
    assert changes >= 3 and len(lines) == changes and rec.figures.encoder_restarts == changes
    assert sorted(set(decoded)) == [320, 640]
    assert c1 - c0 == pytest.approx(ended - begun + 2.0, abs=1.2)  # the pre-roll starts on a keyframe
    assert len(decoded) >= 0.8 * 10 * (c1 - c0)


@pytest.mark.parametrize("max_width, captured, size", [(640, (768, 576), (640, 480)), (0, (768, 576), (768, 576)),
                                                       (640, (1280, 720), (640, 360)), (0, (1280, 720), (1280, 720))])
def test_max_width_caps_encoded_clips(tmp_path: Path, max_width: int, captured: tuple[int, int],
                                      size: tuple[int, int]) -> None:
    import cv2

    done = []
    rec = ClipRecorder(0.0, 0.0, 60.0, lambda *a: done.append(a), max_width=max_width)
    cap = cv2.VideoCapture(str(VTEST))
    imgs = [cv2.resize(cap.read()[1], captured) for _ in range(30)]
    cap.release()
    rec.begin("m", 1000.0, tmp_path / "m.mp4")
    for i, img in enumerate(imgs):
        rec._commands()
        rec._encode(Frame(i, 1000.0 + i / 10, img))
    rec.end("m", 1000.0 + 2.9)
    rec._commands()
    rec._finish_due(clock.now() + 10)
    with av.open(str(tmp_path / "m.mp4")) as c:
        got = {(f.width, f.height) for f in c.decode(video=0)}
    f = rec.current()
    print(f"\n{captured[0]}x{captured[1]} with max_width {max_width}: {size[0]}x{size[1]}, "
          f"{f.encode_ms_total / f.frames_encoded:.1f} ms a frame (scaling and x264)")
    assert got == {size}


def daemon_config(tmp_path: Path, url: str, extra_source: str = "") -> Path:
    cfg = record_config(tmp_path, tmp_path / "events", source=url, extra="pre_s = 2\npost_s = 2\nmax_clip_s = 6")
    if extra_source:
        cfg.write_text(cfg.read_text().replace("[source]\n", f"[source]\n{extra_source}\n", 1))
    return cfg


def stored_clips(store: Path) -> list[Path]:
    from edgedetect.storage.ondisk import CLIP
    from edgedetect.storage.store import EventStore

    s = EventStore(store)
    try:
        return [store / r.id / CLIP for r in s.query_reviews(limit=100) if r.clip_bytes]
    finally:
        s.close()


@pytest.mark.slow
def test_daemon_detects_on_rtsp_and_its_clips_are_the_cameras_packets(media: dict[str, Path],
                                                                        tmp_path: Path) -> None:
    with RtspCamera({"/cam": media["main"]}) as cam:
        with DaemonProcess("run", "--config", str(daemon_config(tmp_path, cam.url("/cam")))) as d:
            d.wait_for(lambda: d.json("/api/stats")["record"]["clips_written"] >= 2, timeout=40)
            stats = d.json("/api/stats")
            code, _ = d.terminate()
    clips = stored_clips(tmp_path / "events")
    counts = [assert_copied(c, media["main"]) for c in clips]
    rec = stats["record"]
    print(f"\n{stats['record']['events_stored']} events, clips of {[n for n, _ in counts]} copied packets; "
          f"recorder: {rec['packets_copied']} packets copied, encode_ms_mean {rec['encode_ms_mean']}")
    assert code == 0 and len(clips) >= 2 and rec["encode_ms_mean"] is None and rec["packets_copied"] > 50
    # 2 s pre-roll from a keyframe, an event, 2 s post-roll at 10 fps (the item open at the stop is cut short)
    assert sum(n >= 20 for n, _ in counts) >= 2


@pytest.mark.slow
def test_camera_killed_mid_event_reconnects_and_the_clip_keeps_what_came(media: dict[str, Path],
                                                                         tmp_path: Path) -> None:
    cam = RtspCamera({"/cam": media["main"]}).start()
    try:
        with DaemonProcess("run", "--config", str(daemon_config(tmp_path, cam.url("/cam")))) as d:
            d.wait_for(lambda: d.json("/api/stats")["record"]["events_stored"] >= 1, timeout=30)
            cam.stop()  # SIGKILL: no TEARDOWN, the connection just ends
            d.wait_for(lambda: d.json("/api/stats")["source_state"] != "running", timeout=10)
            time.sleep(2)
            cam.start()
            d.wait_for(lambda: d.json("/api/stats")["source_state"] == "running", timeout=30)
            d.wait_for(lambda: d.json("/api/stats")["record"]["clips_written"] >= 2, timeout=40)
            stats = d.json("/api/stats")
            code, _ = d.terminate()
            out = d.output()
    finally:
        cam.stop()
    clips = stored_clips(tmp_path / "events")
    counts = [assert_copied(c, media["main"]) for c in clips]
    lost = [ln for ln in out.splitlines() if "rtsp://" in ln and ("ended" in ln or "no data" in ln)]
    print(f"\n{len(clips)} clips of {[n for n, _ in counts]} packets; the camera's loss in the log: {lost}")
    assert code == 0 and "Traceback" not in out and len(clips) >= 2
    assert len(lost) == 1 and "retrying" in lost[0]


def test_doctor_says_which_decoder_an_rtsp_camera_gets(tmp_path: Path) -> None:
    import av

    from edgedetect.config import Config
    from edgedetect.doctor import Env, check_camera

    cfg = Config()
    cfg.source.uri, cfg.source.hwaccel = "rtsp://u:secret@cam/sub", "auto"
    cfg.source.record_uri = "rtsp://u:secret@cam/main"
    auto = check_camera(cfg, Env(dev_root=tmp_path))
    cfg.source.hwaccel = "v4l2m2m"
    forced = check_camera(cfg, Env(dev_root=tmp_path))
    (tmp_path / "video10").touch()  # the device is there; whether this FFmpeg can drive it decides
    there = check_camera(cfg, Env(dev_root=tmp_path))
    assert auto.ok and "software (hwaccel auto: no" in auto.detail and "secret" not in auto.line()
    assert "clips copied from rtsp://u:***@cam/main" in auto.detail
    assert not forced.ok and "hwaccel = \"auto\"" in forced.fix
    if "h264_v4l2m2m" in av.codecs_available:
        assert there.ok and "h264_v4l2m2m on" in there.detail
    else:
        assert not there.ok and "this FFmpeg has no h264_v4l2m2m decoder" in there.detail


class Ranges(http.server.SimpleHTTPRequestHandler):
    """Byte ranges, which Chromium needs to seek in a clip (as the daemon serves clips)."""

    def do_GET(self) -> None:
        m = re.match(r"bytes=(\d+)-(\d*)", self.headers.get("Range", ""))
        path = Path(self.translate_path(self.path))
        if m is None or not path.is_file():
            return super().do_GET()
        data = path.read_bytes()
        a, b = int(m.group(1)), min(int(m.group(2) or len(data) - 1), len(data) - 1)
        self.send_response(206)
        self.send_header("Content-Type", "video/mp4")
        self.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
        self.send_header("Content-Length", str(b - a + 1))
        self.end_headers()
        self.wfile.write(data[a:b + 1])

    def log_message(self, *args: object) -> None:
        pass


def serve_files(folder: Path) -> http.server.ThreadingHTTPServer:
    """`folder` over HTTP on a free loopback port, with byte ranges; shutdown() when done."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Ranges, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
# Seeks to the time after '#', then (a second later: the seeked event can come before the frame is there)
# draws the picture shown into a 64x48 canvas and writes its grey
# levels into the page, so that --dump-dom hands them over once the seek has really finished.
SEEK_PAGE = """<html><body><video id=v src="clip.mp4" muted></video><canvas id=c width=64 height=48></canvas>
<script>const v = document.getElementById('v'), g = document.getElementById('c').getContext('2d');
v.onloadedmetadata = () => { v.currentTime = parseFloat(location.hash.slice(1)); };
v.onseeked = () => setTimeout(() => { g.drawImage(v, 0, 0, 64, 48); const d = g.getImageData(0, 0, 64, 48).data;
  const out = []; for (let i = 0; i < d.length; i += 4) out.push(Math.round((d[i] + d[i + 1] + d[i + 2]) / 3));
  document.body.setAttribute('data-grey', out.join(',')); }, 1000);</script></body></html>"""


@pytest.mark.slow
@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")
def test_a_clip_over_a_size_change_plays_in_chromium(tmp_path: Path) -> None:
    """640x480, then 320x240, then 640x480 again in one MP4: Chromium shows each part's picture
    (compared with PyAV's decoding of the same instant), not a mosaic or a frozen frame."""
    import cv2

    done = []
    rec = ClipRecorder(0.0, 0.0, 60.0, lambda *a: done.append(a))
    cap = cv2.VideoCapture(str(VTEST))
    rec.begin("z", 1000.0, tmp_path / "clip.mp4")
    for i in range(60):
        img = cap.read()[1]
        size = (320, 240) if 20 <= i < 40 else (640, 480)
        rec._commands()
        rec._encode(Frame(i, 1000.0 + i / 10, cv2.resize(img, size, interpolation=cv2.INTER_AREA)))
    cap.release()
    rec.end("z", 1005.9)
    rec._commands()
    rec._finish_due(clock.now() + 10)
    assert done and done[0][4] is None and rec.figures.encoder_restarts == 2
    (tmp_path / "seek.html").write_text(SEEK_PAGE)
    server = serve_files(tmp_path)
    scores = []
    try:
        for t in (1.05, 3.05, 5.05):  # in the first 640x480 part, the 320x240 part, and the second 640x480 one
            r = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--virtual-time-budget=10000",
                                f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom",
                                f"http://127.0.0.1:{server.server_address[1]}/seek.html#{t}"],
                               capture_output=True, text=True, timeout=90)
            grey = re.search(r'data-grey="([0-9,]+)"', r.stdout)
            assert grey, r.stdout[-500:] + r.stderr[-1000:]
            got = np.array([int(v) for v in grey.group(1).split(",")], float)
            with av.open(str(tmp_path / "clip.mp4")) as c:
                best = max(((round(f.time, 2), f.width, float(np.corrcoef(cv2.resize(
                    f.to_ndarray(format="gray"), (64, 48), interpolation=cv2.INTER_AREA).ravel(), got)[0, 1]))
                    for f in c.decode(video=0)), key=lambda s: s[2])
            assert t - 0.15 <= best[0] <= t + 0.05, (t, best)  # the frame shown at t is the clip's frame there
            scores.append(best[1:])
    finally:
        server.shutdown()
        server.server_close()
    print(f"\nChromium's picture against PyAV's at 1, 3 and 5 s (width, correlation): {scores}")
    assert [w for w, _ in scores] == [640, 320, 640] and all(r > 0.95 for _, r in scores)


def _cost(cfg: Path, window: float = 10.0) -> tuple[float, dict]:
    """Process CPU % over `window` s once clips are being made, and the stats at its end."""
    from test_record import _cpu

    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 20, timeout=30)
        time.sleep(1)
        cpu0, t0 = _cpu(d.proc.pid), time.monotonic()
        time.sleep(window)
        cpu1, t1 = _cpu(d.proc.pid), time.monotonic()
        stats = d.json("/api/stats")
        d.terminate()
    return 100 * (cpu1 - cpu0) / (t1 - t0), stats


@pytest.mark.slow
def test_cost_of_copying_packets_against_encoding_them(media: dict[str, Path], tmp_path: Path) -> None:
    """The same H.264 video at 10 fps, the same detection and [record]: from the RTSP camera with
    its packets copied into clips, and as a file whose frames the recorder encodes with x264 (at
    the 640 px cap). Process CPU % of each daemon. (x264 at the full 768x576 costs what the cap
    does at this size: test_max_width_caps_encoded_clips measures the cap on the encoder alone.)"""
    runs = {}
    with RtspCamera({"/cam": media["main"]}) as cam:
        for name, source, extra in (("copy", cam.url("/cam"), ""), ("x264 640", str(media["main"]), "")):
            (tmp_path / name).mkdir()
            cfg = record_config(tmp_path / name, tmp_path / name / "events", source=source, loop=True,
                                extra=f"pre_s = 2\npost_s = 2\n{extra}")
            runs[name] = _cost(cfg)
    for name, (cpu, stats) in runs.items():
        rec = stats["record"]
        print(f"\n{name}: process CPU {cpu:.0f}%, inference {stats['inference_fps']} fps, recorder "
              f"{rec['encode_ms_mean']} ms a frame, {rec['packets_copied']} packets copied, "
              f"{rec['frames_dropped']} dropped")
    copy, x640 = runs["copy"], runs["x264 640"]
    print(f"copy / x264 640: {copy[0] / x640[0]:.2f}")
    assert copy[1]["record"]["encode_ms_mean"] is None and copy[1]["record"]["packets_copied"] > 50
    assert x640[1]["record"]["encode_ms_mean"] and x640[1]["record"]["packets_copied"] == 0


@pytest.mark.parametrize("encoder, codec, tag", [("libx264", "h264", "avc1"), ("libx265", "hevc", "hvc1")])
def test_annexb_packets_with_inline_parameter_sets_are_copied(tmp_path: Path, encoder: str, codec: str,
                                                              tag: str) -> None:
    """Packets as the Pi's hardware encoder gives them: Annex-B, SPS/PPS (and VPS) inline before
    each keyframe, no extradata. The clip holds them unchanged, plays, and HEVC is tagged hvc1."""
    import cv2

    from edgedetect.frames import EncodedPacket

    enc = av.CodecContext.create(encoder, "w")
    enc.width, enc.height, enc.pix_fmt, enc.time_base = 384, 288, "yuv420p", Fraction(1, 10)
    enc.options = {"g": "10", "bf": "0"} if codec == "h264" else {"x265-params": "keyint=10:bframes=0:log-level=error"}
    cap = cv2.VideoCapture(str(VTEST))
    sent = []
    for i in range(40):
        img = cv2.resize(cap.read()[1], (384, 288))
        vf = av.VideoFrame.from_ndarray(img, format="bgr24").reformat(format="yuv420p")
        vf.pts = i
        sent += [EncodedPacket(bytes(p), 1000.0 + p.pts / 10, bool(p.is_keyframe), codec, 384, 288)
                 for p in enc.encode(vf)]
    sent += [EncodedPacket(bytes(p), 1000.0 + p.pts / 10, bool(p.is_keyframe), codec, 384, 288)
             for p in enc.encode(None)]
    cap.release()
    assert sent[0].data[:4] == b"\0\0\0\1" and not enc.extradata
    done = []
    rec = ClipRecorder(0.0, 0.0, 60.0, lambda *a: done.append(a))
    rec.begin("k", 1000.0, tmp_path / "k.mp4")
    rec._commands()
    for i, p in enumerate(sent):
        rec._encode(Frame(i, p.t, np.zeros((288, 384, 3), np.uint8), packets=(p,)))
    rec.end("k", sent[-1].t)
    rec._commands()
    rec._finish_due(clock.now() + 10)
    assert done and done[0][4] is None, done
    with av.open(str(tmp_path / "k.mp4")) as c:
        s = c.streams.video[0]
        got = [bytes(p) for p in c.demux(s) if p.size]
        assert (s.codec_context.name, s.codec_tag, s.codec_context.width) == (codec, tag, 384)
    with av.open(str(tmp_path / "k.mp4")) as c:
        decoded = sum(1 for _ in c.decode(video=0))
    assert [nal_units(g) for g in got] == [nal_units(p.data, annexb=True) for p in sent]  # the same NAL units, packet by packet
    assert decoded >= len(sent) - 1 and rec.figures.frames_encoded == 0


def test_an_http_h264_stream_that_is_not_mjpeg_is_read_by_pyav_and_its_packets_copied(
        media: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """MP4 over HTTP: the MJPEG reader hands it over; its length-prefixed packets come out Annex-B
    with the parameter sets inline, and a clip of them is the file's pictures."""
    caplog.set_level(logging.INFO, "edgedetect.sources")
    server = serve_files(media["main"].parent)
    src = MjpegStream(f"http://127.0.0.1:{server.server_address[1]}/main.mp4")
    done = []
    rec = ClipRecorder(0.0, 0.0, 60.0, lambda *a: done.append(a))
    rec.begin("h", 0.0, tmp_path / "h.mp4")
    rec._commands()
    try:
        src.open()
        packets = []
        for i in range(30):
            cap = src.read()
            packets += cap.packets
            rec._encode(Frame(i, clock.now(), cap.image, packets=cap.packets))
        assert cap.image.shape == (576, 768, 3)
    finally:
        src.close()
        server.shutdown()
        server.server_close()
    rec.end("h", 0.0)
    rec._commands()
    rec._finish_due(clock.now() + 100)
    assert any("content type video/mp4; reading it with FFmpeg" in r.getMessage() for r in caplog.records)
    assert packets[0].key and packets[0].data[:4] == b"\0\0\0\1" and not packets[0].extradata
    assert {n[0] & 0x1F for n in nal_units(packets[0].data, annexb=True)} >= {7, 8, 5}  # SPS, PPS, IDR inline
    assert done and done[0][4] is None, done
    assert_copied(tmp_path / "h.mp4", media["main"])


def test_cameras_have_their_own_record_uri_and_share_the_rest(tmp_path: Path) -> None:
    from edgedetect.config import camera_configs

    cfg = tmp_path / "c.toml"
    cfg.write_text('[source]\nhwaccel = "auto"\nrtsp_transport = "udp"\n'
                   '[cameras.door]\nuri = "rtsp://door/sub"\nrecord_uri = "rtsp://door/main"\nhwaccel = "off"\n'
                   '[cameras.yard]\nuri = "rtsp://yard/only"\n')
    got = {name: (c.source.uri, c.source.record_uri, c.source.hwaccel, c.source.rtsp_transport)
           for name, c in camera_configs(load(cfg))}
    assert got == {"door": ("rtsp://door/sub", "rtsp://door/main", "off", "udp"),
                   "yard": ("rtsp://yard/only", "", "auto", "udp")}
