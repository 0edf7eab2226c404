"""Hostile sources, provoked for real (issue 14, items 1, 5, 6, 7 and part of 10):

- an image folder whose files are deleted while it loops, or that holds only a 0-byte, a text
  and a cut-short .jpg: a warning per file (once), a backoff, no spinning, a clean SIGTERM;
- a 12000x9000 JPEG: decoded reduced, its peak RSS measured in a subprocess;
- an MJPEG-over-HTTP camera that sends a corrupt part in ten and wrong Content-Lengths: the
  connection is kept, the bad parts skipped and counted;
- an MJPEG camera that changes resolution 768x576 -> 320x240 -> 1280x720 while it streams.
"""

from __future__ import annotations

import logging
import shutil
import socket
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import cv2
import numpy as np
import psutil
import pytest
from conftest import MEDIA, ROOT, VTEST, iou
from daemonproc import DaemonProcess
from mjpegserver import MjpegCamera

from edgedetect.config import SourceConfig
from edgedetect.errors import SourceError
from edgedetect.sources import make_source
from edgedetect.sources.decode import BadImage, decode, jpeg_complete, probe
from edgedetect.sources.images import ImageFiles
from edgedetect.sources.mjpeg import MjpegStream

UNIT_MEMORY_MAX_MIB = 512  # systemd/edgedetect.service: MemoryMax=512M


def hostile_folder(tmp_path: Path, good: tuple[str, ...] = ("grace_hopper.bmp", "pets.jpg")) -> Path:
    """Real images, plus a 0-byte .jpg, a text file named .jpg and a JPEG cut to a third."""
    d = tmp_path / "pictures"
    d.mkdir()
    for name in good:
        shutil.copy(MEDIA / name, d / name)
    (d / "a_empty.jpg").write_bytes(b"")
    (d / "b_text.jpg").write_text("not an image\n")
    kite = (MEDIA / "kite_and_cold.jpg").read_bytes()
    (d / "c_cut.jpg").write_bytes(kite[: len(kite) // 3])
    return d


def read_in_thread(fn, timeout: float) -> tuple[bool, object]:
    """(finished within timeout, its result or exception)."""
    out: list[object] = []

    def run() -> None:
        try:
            out.append(fn())
        except Exception as e:  # noqa: BLE001 - handed back to the test
            out.append(e)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    return not t.is_alive(), (out[0] if out else None)


# --- item 1 and 10: image folders ------------------------------------------------------------

def test_unreadable_files_are_skipped_and_warned_about_once(tmp_path, caplog, capfd):
    d = hostile_folder(tmp_path)
    src = ImageFiles(d, pace=False, loop=True)
    with caplog.at_level(logging.WARNING, logger="edgedetect.sources"):
        src.open()
        shapes = [src.read().image.shape for _ in range(12)]  # six passes over the folder
        src.close()
    assert shapes == [(600, 512, 3), (430, 512, 3)] * 6  # only the real pictures, sorted by name
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert sorted(warnings) == [
        f"{d / 'a_empty.jpg'}: skipped, empty file (0 bytes)",
        f"{d / 'b_text.jpg'}: skipped, not a JPEG, PNG, BMP, WebP or TIFF image",
        f"{d / 'c_cut.jpg'}: skipped, JPEG cut short (no end-of-image marker)",
    ]
    err = capfd.readouterr().err
    assert "WARN" not in err and "Premature end" not in err, err  # nothing from OpenCV or libjpeg


def test_folder_emptied_while_looping_raises_instead_of_spinning(tmp_path):
    d = hostile_folder(tmp_path)
    src = ImageFiles(d, pace=False, loop=True)
    src.open()
    src.read()
    for p in d.glob("*.bmp"):
        p.unlink()
    (d / "pets.jpg").unlink()
    finished, result = read_in_thread(lambda: [src.read() for _ in range(5)], timeout=3.0)
    src.interrupt()
    assert finished, "read() kept going over a folder with nothing readable left"
    assert isinstance(result, SourceError), result
    msg = str(result)
    assert msg.startswith(f"{d}: no readable image in folder (")
    assert "a_empty.jpg: empty file" in msg and "b_text.jpg: not a JPEG" in msg and "\n" not in msg
    for p in d.iterdir():
        p.unlink()
    with pytest.raises(SourceError, match="no images in folder"):
        ImageFiles(d, loop=True).open()


def test_folder_with_nothing_readable_fails_at_open(tmp_path):
    d = hostile_folder(tmp_path, good=())
    with pytest.raises(SourceError) as e:
        ImageFiles(d).open()
    assert str(e.value) == (f"{d}: no readable image in folder (a_empty.jpg: empty file (0 bytes); "
                            "b_text.jpg: not a JPEG, PNG, BMP, WebP or TIFF image; "
                            "c_cut.jpg: JPEG cut short (no end-of-image marker))")


@pytest.mark.parametrize("pace", [True, False])
def test_file_sources_stop_at_once_when_interrupted(tmp_path, pace):
    """read() returns promptly on interrupt(): paced sleeps included, whatever comes next."""
    d = hostile_folder(tmp_path)
    sources = [ImageFiles(d, pace=pace, loop=True), make_source(SourceConfig(uri=str(VTEST), pace=pace, loop=True))]
    for src in sources:
        src.open()
        src.read()
        def loop(src=src) -> None:
            while src.read() is not None:
                pass

        t = threading.Thread(target=loop, daemon=True)
        t.start()
        time.sleep(0.3)
        t0 = time.monotonic()
        src.interrupt()
        t.join(1.0)
        took = time.monotonic() - t0
        src.close()
        assert not t.is_alive() and took < 0.5, (src, took)


def test_empty_source_is_an_error_not_the_current_directory(tmp_path):
    with pytest.raises(SourceError, match=r"^source: empty \(expected picam, demo"):
        make_source(SourceConfig(uri=""))
    r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--source", "", "--port", "0"], cwd=tmp_path,
                       capture_output=True, text=True, timeout=60, check=False)
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and len(errors) == 1 and "source: empty" in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_daemon_refuses_a_folder_with_nothing_readable(tmp_path):
    """A clear end, not a daemon "starting" for ever: exit 2, one line naming the files."""
    d = hostile_folder(tmp_path, good=())
    r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--source", str(d), "--loop", "--port", "0"],
                       capture_output=True, text=True, timeout=60, check=False)
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and "no readable image in folder (a_empty.jpg: empty file" in errors[0], r.stderr
    assert r.stderr.count("a_empty.jpg") == 1 and "Traceback" not in r.stderr  # the error line says it all


def cpu_seconds(proc: psutil.Process) -> float:
    t = proc.cpu_times()
    return t.user + t.system


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_with_a_hostile_folder_backs_off_and_exits_cleanly(tmp_path):
    """Before: the files deleted under --loop gave 55-70% CPU, 14 MB of OpenCV log a second,
    a thread more at each stall restart, and SIGABRT on SIGTERM."""
    d = hostile_folder(tmp_path)
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text("[pipeline]\nstall_timeout = 1.5\n")
    with DaemonProcess("run", "--config", str(cfg), "--source", str(d), "--loop", "--port", "0",
                       "--stats-interval", "60", "--threads", "1") as dp:
        proc = psutil.Process(dp.proc.pid)
        dp.wait_for(lambda: dp.json("/api/stats")["frames_captured"] >= 5, timeout=30)  # 2.5 passes
        out = dp.output()
        for name in ("a_empty.jpg", "b_text.jpg", "c_cut.jpg"):
            assert out.count(f"{name}: skipped") == 1, out
        threads_running = proc.num_threads()
        for p in d.glob("*.*"):
            if p.suffix in (".bmp",) or p.name == "pets.jpg":
                p.unlink()  # nothing readable left
        dp.wait_for(lambda: dp.json("/api/stats")["source_state"] == "reconnecting", timeout=10)
        time.sleep(1.0)
        log_before, cpu_before, t0 = len(dp.output()), cpu_seconds(proc), time.monotonic()
        time.sleep(6.0)  # past stall_timeout four times
        cpu = 100 * (cpu_seconds(proc) - cpu_before) / (time.monotonic() - t0)
        log_bytes = len(dp.output()) - log_before
        threads = proc.num_threads()
        stats = dp.json("/api/stats")
        out = dp.output()
        print(f"hostile folder: cpu {cpu:.1f}%, log {log_bytes} bytes in 6 s, threads {threads_running} -> {threads}")
        assert stats["source_state"] == "reconnecting" and dp.get("/healthz")[0] == 503
        assert cpu < 15, cpu
        assert log_bytes < 1500, out[-3000:]
        assert threads <= threads_running, (threads_running, threads)
        assert "restarting it" not in out  # a backoff is not a stall
        assert "no readable image in folder (a_empty.jpg: empty file (0 bytes); b_text.jpg" in out
        assert out.count("a_empty.jpg: skipped") == 1
        # The folder comes back: the source does too.
        shutil.copy(MEDIA / "pets.jpg", d / "pets.jpg")
        dp.wait_for(lambda: dp.json("/api/stats")["source_state"] == "running", timeout=40)
        code, took = dp.terminate()
        out = dp.output()
        assert code == 0 and took < 2.0, (code, took, out[-2000:])
        assert "terminate called" not in out and "Traceback" not in out


# --- item 5: large still images --------------------------------------------------------------

BIG_JPEG = """
import sys, cv2
w, h = int(sys.argv[2]), int(sys.argv[3])
img = cv2.resize(cv2.imread(sys.argv[1]), (w, h), interpolation=cv2.INTER_LINEAR)
assert cv2.imwrite(sys.argv[4], img, [cv2.IMWRITE_JPEG_QUALITY, 85])
"""


def write_big_jpeg(path: Path, w: int, h: int) -> Path:
    """A real photo (kite_and_cold.jpg) scaled to w x h, written by a subprocess so that the
    324 MB it takes to encode never sits in the test's own memory."""
    subprocess.run([sys.executable, "-c", BIG_JPEG, str(MEDIA / "kite_and_cold.jpg"), str(w), str(h), str(path)],
                   check=True, timeout=120)
    return path


MEASURE = """
import resource, sys
from edgedetect.sources.images import ImageFiles
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
src = ImageFiles(sys.argv[1], pace=False)
src.open()
img = src.read().image
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(before // 1024, peak // 1024, img.shape[1], img.shape[0])
"""


def test_big_jpeg_decoded_reduced_peak_rss_measured(tmp_path):
    """The decode alone, in a fresh process: before the fix a 12000x9000 JPEG took 324 MB more."""
    big = write_big_jpeg(tmp_path / "big.jpg", 12000, 9000)
    r = subprocess.run([sys.executable, "-c", MEASURE, str(big)], capture_output=True, text=True, timeout=120,
                       cwd=ROOT, check=True)
    before, peak, w, h = map(int, r.stdout.split())
    print(f"12000x9000 JPEG: ru_maxrss {before} MiB before the decode, {peak} MiB after ({peak - before} MiB more)")
    assert (w, h) == (1920, 1440)
    assert peak - before < 60, (before, peak)


@pytest.mark.timeout(180)
def test_daemon_peak_rss_on_a_12000x9000_jpeg_stays_under_the_unit_limit(tmp_path):
    """Before: VmHWM 729 MiB here (1.08 GB in the issue's run), past the unit's MemoryMax=512M."""
    big = write_big_jpeg(tmp_path / "big.jpg", 12000, 9000)
    with DaemonProcess("run", "--source", str(big), "--port", "0", "--threads", "1") as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] >= 1, timeout=60)
        status, body = d.get("/snapshot.jpg")  # a viewer: the frame drawn and encoded too
        det = d.json("/api/detections")
        peak_mib = _vm_hwm_mib(d.proc.pid)
        print(f"12000x9000 JPEG: daemon peak RSS (VmHWM) {peak_mib:.0f} MiB, frame {det['width']}x{det['height']}")
        assert d.terminate()[0] == 0
    assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (1440, 1920, 3)
    assert (det["width"], det["height"]) == (1920, 1440)
    labels = {x["label"] for x in det["detections"]}
    assert {"person", "kite"} <= labels, det  # the picture still serves the model
    assert peak_mib < UNIT_MEMORY_MAX_MIB * 0.6, peak_mib


def _vm_hwm_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def png_bomb(path: Path, w: int, h: int) -> Path:
    """A real, valid PNG of w x h grey pixels, all zero: a few hundred KB that decode to w*h*3 bytes."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    z = zlib.compressobj(9)
    row = bytes(w + 1)  # filter byte 0, then the row
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = w.to_bytes(4, "big") + h.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))
    return path


def test_huge_png_is_refused_from_its_header(tmp_path):
    """PNG cannot be decoded reduced: above the pixel budget it is skipped, never decoded."""
    bomb = png_bomb(tmp_path / "bomb.png", 12000, 9000)
    assert bomb.stat().st_size < 2_000_000 and probe(bomb.read_bytes()) == ("PNG", 12000, 9000, False)
    with pytest.raises(BadImage, match=r"^12000x9000 PNG is too large to decode \(over 40 Mpx, and PNG is decoded whole\)"):
        decode(bomb.read_bytes())
    small = png_bomb(tmp_path / "small.png", 4000, 3000)
    assert decode(small.read_bytes()).shape == (1440, 1920, 3)


def test_reduced_decode_matches_a_full_decode():
    """The reduced read gives the same picture as a full decode shrunk afterwards."""
    img = cv2.resize(cv2.imread(str(MEDIA / "kite_and_cold.jpg")), (5408, 3600))
    data = cv2.imencode(".jpg", img, [cv2.IMWRITE_JPEG_QUALITY, 90])[1].tobytes()
    ours = decode(data)
    full = cv2.resize(cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR), (1920, 1278),
                      interpolation=cv2.INTER_AREA)
    assert ours.shape == full.shape == (1278, 1920, 3)
    assert np.abs(ours.astype(int) - full.astype(int)).mean() < 2.0
    # and a JPEG with an EXIF thumbnail (its own end marker inside APP1) is whole only with its own end
    thumb = cv2.imencode(".jpg", cv2.resize(img, (160, 120)))[1].tobytes()
    app1 = b"\xff\xe1" + (len(thumb) + 8).to_bytes(2, "big") + b"Exif\x00\x00" + thumb
    with_thumb = data[:2] + app1 + data[2:]
    assert jpeg_complete(with_thumb) and not jpeg_complete(with_thumb[: 2 + len(app1) + 1000])


# --- items 6 and 7: MJPEG over HTTP ------------------------------------------------------------

def test_mjpeg_reader_skips_corrupt_parts_and_resyncs_on_wrong_lengths():
    cam = MjpegCamera(VTEST, fps=50, frames=40, corrupt_every=5, bad_length_every=7).start()
    src = MjpegStream(cam.url)
    try:
        src.open()
        expected = {cv2.imdecode(np.frombuffer(j, np.uint8), cv2.IMREAD_COLOR).tobytes() for j in cam.jpegs}
        frames = [src.read() for _ in range(60)]
        assert all(f is not None and f.image.tobytes() in expected for f in frames)  # each one whole and intact
        sent_corrupt = cam.sent_corrupt
        assert cam.connections == 1  # never reconnected
        assert cam.sent_bad_length >= 8  # wrong lengths, too long and too short, were part of it
        assert sent_corrupt - 1 <= src.frames_corrupt <= sent_corrupt, (src.frames_corrupt, sent_corrupt)
        assert len(frames) + src.frames_corrupt >= cam.sent - 3  # nothing else was lost
    finally:
        src.close()
        cam.stop()


def test_mjpeg_reader_is_stoppable_and_bounded():
    cam = MjpegCamera(VTEST, frames=5).start()
    src = MjpegStream(cam.url, timeout=1.5)
    try:
        src.open()
        src.read()
        cam.hang.set()  # connection open, nothing sent
        threading.Timer(0.3, src.interrupt).start()
        t0 = time.monotonic()
        assert src.read() is None and time.monotonic() - t0 < 0.8
        src.close()
        src = MjpegStream(cam.url, timeout=1.5)
        t0 = time.monotonic()
        with pytest.raises(SourceError, match="no data for 2 s|no complete frame"):
            src.open()  # connected, but no frame comes: not open
        assert time.monotonic() - t0 < 3.5
    finally:
        src.close()
        cam.stop()
    with pytest.raises(SourceError, match="cannot connect"):
        MjpegStream(cam.url, timeout=1.0).open()


def test_mjpeg_reader_follows_size_changes_and_logs_each_once(caplog):
    cam = MjpegCamera(VTEST, fps=50, frames=3).start()
    src = MjpegStream(cam.url)
    sizes = []
    try:
        with caplog.at_level(logging.INFO, logger="edgedetect.sources"):
            src.open()
            for size in [None, (320, 240), (1280, 720)]:
                cam.size = size
                deadline = time.monotonic() + 3
                want = size or (768, 576)
                while time.monotonic() < deadline:
                    img = src.read().image
                    sizes.append(img.shape[1::-1])
                    if img.shape[1::-1] == want:
                        break
                for _ in range(10):
                    assert src.read().image.shape[1::-1] == want
    finally:
        src.close()
        cam.stop()
    changes = [r.getMessage() for r in caplog.records if "size changed" in r.getMessage()]
    assert [m.split(": ", 1)[1] for m in changes] == ["picture size changed from 768x576 to 320x240",
                                                       "picture size changed from 320x240 to 1280x720"]


def sample(d: DaemonProcess, n: int) -> tuple[list[float], list[int], list[str]]:
    fps, health, states = [], [], []
    for _ in range(n):
        s = d.json("/api/stats")
        fps.append(s["camera_fps"])
        states.append(s["source_state"])
        health.append(d.get("/healthz")[0])
        time.sleep(1.0)
    return fps, health, states


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_keeps_an_mjpeg_connection_through_bad_parts(tmp_path):
    """Before: camera_fps 7.7 (0.0 in 3 of 15 samples) with a corrupt part in ten, 7.0 (0.0 in
    5 of 15) with a wrong length in ten; /healthz 503 in 3 and 5 of 15; a reconnect each time."""
    cam = MjpegCamera(VTEST, corrupt_every=10, bad_length_every=15).start()
    try:
        with DaemonProcess("run", "--source", cam.url, "--port", "0", "--threads", "1", "--stats-interval", "5") as d:
            d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 10, timeout=30)
            time.sleep(2.0)
            fps, health, states = sample(d, 15)
            stats = d.json("/api/stats")
            print(f"corrupt 1 in 10 + wrong length 1 in 15: camera_fps {fps}, healthz {health}, "
                  f"frames_corrupt {stats['frames_corrupt']} of {cam.sent_corrupt} sent, connections {cam.connections}")
            out = d.output()
            assert health == [200] * 15 and states == ["running"] * 15, (health, states)
            assert min(fps) >= 7.0, fps  # 10 fps less the corrupt tenth, less noise
            assert cam.connections == 1 and "retrying in" not in out, out[-2000:]
            assert cam.sent_corrupt - 2 <= stats["frames_corrupt"] <= cam.sent_corrupt
            assert out.count("skipped a corrupt frame") == 1 and out.count("Content-Length says") == 1
            assert d.terminate()[0] == 0
    finally:
        cam.stop()


def _frame_size(d: DaemonProcess) -> tuple[int, int]:
    det = d.json("/api/detections")
    return det.get("width"), det.get("height")


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_daemon_follows_a_stream_that_changes_size(tmp_path, detector):
    """Before: frames stayed 768x576 (a mosaic, then frozen) with 30 [swscaler] lines, while
    /healthz said 200 and camera_fps 9.9."""
    from edgedetect import config
    from edgedetect.detect.resolve import detect_filter
    from edgedetect.frames import Frame
    from edgedetect.pipeline.worker import infer

    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text('[motion]\nenabled = "off"\n')  # every frame inferred, none held from another size
    flt = detect_filter(config.load(str(cfg), {}))
    cam = MjpegCamera(VTEST, frames=1).start()  # one picture, sent at each size in turn
    try:
        with DaemonProcess("run", "--config", str(cfg), "--source", cam.url, "--port", "0", "--threads", "1") as d:
            d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 3, timeout=30)
            for size in [(768, 576), (320, 240), (1280, 720)]:
                cam.size = None if size == (768, 576) else size
                d.wait_for(lambda size=size: _frame_size(d) == size, timeout=10)
                time.sleep(0.5)
                got = d.json("/api/detections")
                sent = cv2.imdecode(np.frombuffer(cam.frame(0, cam.size), np.uint8), cv2.IMREAD_COLOR)
                want = infer(detector, Frame(0, 0.0, sent), flt, 3).detections
                want_boxes = [(w.label, list(w.pixel_box(*size))) for w in want]
                got_boxes = [(g["label"], g["box"]) for g in got["detections"]]
                assert len(got_boxes) == len(want_boxes) >= 3, (size, got_boxes, want_boxes)
                for label, box in want_boxes:
                    assert any(lb == label and iou(box, b) > 0.9 for lb, b in got_boxes), (size, label, box, got_boxes)
                _, body = d.get("/snapshot.jpg")
                snap = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR)
                assert snap.shape[1::-1] == size
                assert d.get("/healthz")[0] == 200
            out = d.output()
            assert out.count("picture size changed from 768x576 to 320x240") == 1, out[-2000:]
            assert out.count("picture size changed from 320x240 to 1280x720") == 1
            assert "swscaler" not in out and "retrying in" not in out
            assert d.terminate()[0] == 0
    finally:
        cam.stop()


def test_http_url_that_is_not_mjpeg_is_left_to_ffmpeg(tmp_path):
    """A plain file over HTTP (not multipart) still plays, through FFmpeg as before."""
    import http.server

    shutil.copy(VTEST, tmp_path / "clip.avi")

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a, **kw):
            super().__init__(*a, directory=str(tmp_path), **kw)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        src = make_source(SourceConfig(uri=f"http://127.0.0.1:{server.server_port}/clip.avi"))
        assert isinstance(src, MjpegStream)
        src.open()
        assert src.read().image.shape == (576, 768, 3)
        src.close()
    finally:
        server.shutdown()
        server.server_close()



@pytest.fixture(scope="module")
def self_signed(tmp_path_factory) -> tuple[Path, Path]:
    d = tmp_path_factory.mktemp("tls")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(d / "key.pem"),
                    "-out", str(d / "cert.pem"), "-days", "2", "-subj", "/CN=127.0.0.1",
                    "-addext", "subjectAltName=IP:127.0.0.1"], check=True, capture_output=True, timeout=60)
    return d / "cert.pem", d / "key.pem"


def test_https_mjpeg_read_by_us_when_trusted_else_by_ffmpeg_as_before(self_signed, caplog):
    """A camera's certificate that verifies: our reader (corrupt parts skipped). A self-signed
    one, which FFmpeg never checked: still played, by FFmpeg, and the log says why."""
    import ssl

    cert, key = self_signed
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert, key)
    cam = MjpegCamera(VTEST, fps=30, frames=10, corrupt_every=4, tls=server).start()
    try:
        trusted = ssl.create_default_context(cafile=str(cert))
        src = MjpegStream(cam.url, ssl_context=trusted)
        src.open()
        assert all(src.read().image.shape == (576, 768, 3) for _ in range(8))
        assert src.frames_corrupt >= 2 and src._ffmpeg is None
        src.close()
        with caplog.at_level(logging.INFO, logger="edgedetect.sources"):
            src = MjpegStream(cam.url)  # the system's CAs: this certificate is not among them
            src.open()
            assert src._ffmpeg is not None and src.read().image.shape == (576, 768, 3)
            src.close()
        assert any("TLS certificate not verified" in r.getMessage() and r.levelno == logging.WARNING
                   for r in caplog.records)
    finally:
        cam.stop()


# --- issue 22 item 8: a camera that burns the reader's CPU or floods the log ------------------

MULTIPART_HEAD = b"HTTP/1.0 200 OK\r\nContent-Type: multipart/x-mixed-replace; boundary=camframe\r\n\r\n"
PART_HEAD = b"--camframe\r\nContent-Type: image/jpeg\r\n\r\n"  # no Content-Length: the reader finds the end


class ScriptedCamera:
    """A camera that sends every connection the same bytes, piece by piece, then closes it, or,
    with `stream` set, goes on with `frame` every 50 ms. Counts its connections."""

    def __init__(self, frame: bytes, script: list[bytes], pause_s: float = 0.0):
        self.frame = frame
        self.script = script
        self.pause_s = pause_s  # between pieces, so that the reader gets them one chunk at a time
        self.stream = threading.Event()
        self.connections = 0
        self._stop = threading.Event()
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.url = f"http://127.0.0.1:{self._listener.getsockname()[1]}/video.mjpg"
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.recv(4096)  # the request
                for piece in self.script:
                    conn.sendall(piece)
                    time.sleep(self.pause_s)
                while self.stream.is_set() and not self._stop.is_set():
                    conn.sendall(PART_HEAD + self.frame + b"\r\n")
                    time.sleep(0.05)
            except OSError:
                pass

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._listener.close()


COMMENT_OF_END_MARKERS = b"\xff\xfe\x08\x00" + b"\xff\xd9" * 1023  # a 2 KB comment segment of FF D9 pairs


@pytest.mark.parametrize("start, piece", [(b"\xff\xd8", COMMENT_OF_END_MARKERS), (b"\xff\xd8\xff\xd9", b"\x00" * 2048)],
                         ids=["end-markers-in-segments", "end-marker-then-padding"])
def test_mjpeg_reader_examines_each_byte_of_a_hostile_part_a_bounded_number_of_times(start, piece):
    """A part that looks as if its JPEG might end after every chunk: FF D9 pairs in comment
    segments (each chunk ends on one), or an end marker followed by endless padding. A reader
    that walks the part again on every chunk, from its start (the segments) or from its end (the
    padding), examines 50-260x the part's bytes here; this one a few times each byte."""
    pieces = 256
    good = MjpegCamera(VTEST, frames=1).jpegs[0]
    cam = ScriptedCamera(good, [MULTIPART_HEAD, PART_HEAD, good, b"\r\n", PART_HEAD + start, *[piece] * pieces,
                                b"\r\n" + PART_HEAD, good, b"\r\n"], pause_s=0.002)
    cam.stream.set()  # the connection stays open after the script
    src = MjpegStream(cam.url)
    try:
        src.open()
        assert src.read() is not None
        before = src.scanned
        assert src.read() is not None  # the good frame after the hostile part
        hostile = len(PART_HEAD + start) + pieces * len(piece)
        examined = src.scanned - before
        print(f"{hostile} bytes of hostile part: {examined} bytes examined ({examined / hostile:.1f}x)")
        assert src.frames_corrupt == 1 and cam.connections == 1
        assert examined < 4 * hostile, (examined, hostile)  # looked for the boundary, the padding, the segments
    finally:
        src.close()
        cam.close()


@pytest.mark.slow
def test_a_source_failing_on_every_connection_is_logged_once_then_summarised(caplog):
    """A camera that sends a corrupt part and a good frame on each connection, then closes it,
    round after round: the failure is logged in full once (the state moves back and forth not at
    all), then one summary a period, and one line once frames have flowed for a while again; the
    corrupt part is warned about once, not once a connection."""
    from edgedetect.pipeline.capture import CaptureThread
    from edgedetect.frames import Frame
    from edgedetect.pipeline.slot import LatestSlot
    from edgedetect.pipeline.stats import CameraStats

    good = MjpegCamera(VTEST, frames=1).jpegs[0]
    cam = ScriptedCamera(good, [MULTIPART_HEAD, PART_HEAD, b"not a picture\r\n", PART_HEAD, good, b"\r\n"])
    stats = CameraStats()
    stats.source.name = "flaky"
    period_s = 1.0
    thread = CaptureThread(lambda: MjpegStream(cam.url), LatestSlot[Frame](), stats, failure_period_s=period_s,
                           recovered_after_s=0.5)
    try:
        with caplog.at_level(logging.INFO, logger="edgedetect"):
            t0 = time.monotonic()
            thread.start()
            deadline = t0 + 20
            while cam.connections < 8 and time.monotonic() < deadline:
                time.sleep(0.05)
            failing_s = time.monotonic() - t0
            failing = [r.getMessage() for r in caplog.records]
            cam.stream.set()  # the next connection streams
            deadline = time.monotonic() + 10
            while not any("recovered" in m.getMessage() for m in caplog.records) and time.monotonic() < deadline:
                time.sleep(0.05)
            total_s = time.monotonic() - t0
            time.sleep(1.0)  # and nothing more is said while frames flow
    finally:
        thread.stop()
        thread.join(2)
        cam.close()
    lines = [r.getMessage() for r in caplog.records if r.name.startswith("edgedetect.pipeline")]
    print(f"{cam.connections} connections, {len(failing)} lines while failing for {failing_s:.1f} s:", *lines, sep="\n")
    assert cam.connections >= 8
    assert sum("skipped a corrupt frame" in m for m in failing) == 1
    closed = f"{cam.url}: stream closed by the camera"
    assert failing.count(closed + "; retrying in 0.5 s") == 1
    summaries = [m for m in lines if m.startswith("source flaky: still failing: ")]
    assert 1 <= len(summaries) <= total_s / period_s + 1, summaries
    assert all(m.endswith(f" s ({closed})") for m in summaries)
    assert lines.count("source flaky: running") == 1 and lines.count("source flaky: reconnecting") == 1
    recovered = [m for m in lines if "recovered" in m]
    assert len(recovered) == 1 and recovered[0].startswith("source flaky: recovered after "), recovered
    assert len(lines) == 3 + len(summaries) + 1, lines  # running, reconnecting, the failure, summaries, recovered
