"""The daemon as a user runs it: a real process, real sockets, the real model on vtest.avi."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest

from conftest import VTEST
from daemonproc import DaemonProcess


def read_mjpeg_parts(port: int, n: int, timeout: float = 20.0) -> tuple[dict[str, str], list[bytes]]:
    """Read n parts of /stream.mjpg over a raw socket, parsing the multipart framing ourselves."""
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
    buf = b""
    while b"\r\n\r\n" not in buf:
        buf += s.recv(65536)
    head, buf = buf.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0].startswith("HTTP/1.1 200"), lines[0]
    headers = {k.lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:])}
    boundary = headers["content-type"].split("boundary=")[1].encode()
    parts = []
    deadline = time.monotonic() + timeout
    while len(parts) < n and time.monotonic() < deadline:
        while b"\r\n\r\n" not in buf:
            buf += s.recv(65536)
        part_head, buf = buf.split(b"\r\n\r\n", 1)
        assert part_head.startswith(b"--" + boundary), part_head[:80]
        fields = dict(ln.split(b":", 1) for ln in part_head.split(b"\r\n")[1:])
        length = int(fields[b"Content-Length"])
        while len(buf) < length + 2:
            buf += s.recv(65536)
        parts.append(buf[:length])
        assert buf[length:length + 2] == b"\r\n"
        buf = buf[length + 2:]
    s.close()
    return headers, parts


@pytest.fixture(scope="module")
def vtest_daemon(tmp_path_factory):
    sysfs = tmp_path_factory.mktemp("sysfs")
    (sysfs / "class/thermal/thermal_zone0").mkdir(parents=True)
    (sysfs / "class/thermal/thermal_zone0/temp").write_text("61234\n")
    (sysfs / "devices/platform/soc/soc:firmware").mkdir(parents=True)
    (sysfs / "devices/platform/soc/soc:firmware/get_throttled").write_text("0x50005\n")
    with DaemonProcess("run", "--source", str(VTEST), "--loop", "--port", "0", "--stats-interval", "1",
                       "--sysfs-root", str(sysfs), "--threads", "1") as d:
        d.wait_for(lambda: d.json("/api/detections")["frame"] is not None)
        yield d


def test_stream_parts_decode(vtest_daemon):
    headers, parts = read_mjpeg_parts(vtest_daemon.port, 12)
    assert headers["content-type"].startswith("multipart/x-mixed-replace")
    assert len(parts) == 12
    for jpg in parts:
        img = cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR)
        assert img is not None and img.shape == (576, 768, 3)
    assert len({hash(p) for p in parts}) == 12  # each part a new frame


def test_detections_have_persons_in_frame_pixels(vtest_daemon):
    det = vtest_daemon.json("/api/detections")
    assert set(det) >= {"frame", "timestamp", "detections"}
    persons = [d for d in det["detections"] if d["label"] == "person"]
    assert len(persons) >= 2
    for d in persons:
        x0, y0, x1, y1 = d["box"]
        assert 0 <= x0 < x1 <= 768 and 0 <= y0 < y1 <= 576
        assert (y1 - y0) > (x1 - x0)  # people standing: taller than wide
        assert 0.5 <= d["score"] <= 1.0
    assert abs(det["timestamp"] - time.time()) < 5


def test_stats_consistent(vtest_daemon):
    s = vtest_daemon.wait_for(lambda: (lambda s: s if s["inference_fps"] > 0 else None)(vtest_daemon.json("/api/stats")))
    for key in ("camera_fps", "inference_fps", "published_fps", "dropped_frames", "inference_ms", "latency_ms",
                "cpu_percent", "rss_mb"):
        assert key in s, key
    assert 8.0 <= s["camera_fps"] <= 11.0  # vtest plays at 10 fps
    assert s["inference_fps"] <= s["camera_fps"] * 1.2  # 5-s windows: their edges jitter by a frame
    assert s["published_fps"] == pytest.approx(s["inference_fps"], rel=0.1)
    assert s["frames_inferred"] + s["dropped_frames"] <= s["frames_captured"]
    assert s["frames_captured"] - s["frames_inferred"] - s["dropped_frames"] <= 2
    im = s["inference_ms"]
    assert 0 < im["p50"] <= im["p95"] and im["mean"] > 0
    assert s["latency_ms"]["p50"] >= im["p50"]  # capture-to-publish includes inference
    assert 0 < s["rss_mb"] < 1000
    assert s["temperature_c"] == 61.2
    assert s["throttled"] == "0x50005"
    assert s["throttled_flags"] == ["under_voltage", "throttled", "under_voltage_occurred", "throttled_occurred"]


def test_log_line_every_interval(vtest_daemon):
    def lines() -> list[str]:
        return [ln for ln in vtest_daemon.lines if "edgedetect.pipeline.stats: " in ln]

    vtest_daemon.wait_for(lambda: len(lines()) >= 2)
    line = lines()[-1].split("edgedetect.pipeline.stats: ", 1)[1]
    assert re.fullmatch(r"\d+\.\d fps(?: \(camera [\d.]+\))?, inference [\d.]+ ms \(p95 [\d.]+\), "
                        r"latency [\d.]+ ms, cpu \d+% \(system \d+%\), \d+ MB, 61\.2 C, "
                        r"throttled=0x50005 \(under_voltage,throttled,under_voltage_occurred,throttled_occurred\)"
                        r"(?:; .*)?", line), line


def test_snapshot_and_health(vtest_daemon):
    status, body = vtest_daemon.get("/snapshot.jpg")
    assert status == 200 and cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_COLOR).shape == (576, 768, 3)
    status, body = vtest_daemon.get("/healthz")
    assert status == 200 and b'"ok"' in body
    status, body = vtest_daemon.get("/")
    assert status == 200 and b"stream.mjpg" in body


def test_no_temperature_when_sysfs_files_absent(tmp_path):
    with DaemonProcess("run", "--source", str(VTEST), "--port", "0", "--sysfs-root", str(tmp_path)) as d:
        s = d.json("/api/stats")
        assert "temperature_c" not in s and "throttled" not in s


def test_sigterm_stops_within_2s_with_viewer_connected(tmp_path):
    with DaemonProcess("run", "--source", str(VTEST), "--port", "0") as d:
        d.wait_for(lambda: d.json("/api/detections")["frame"] is not None)
        viewer = socket.create_connection(("127.0.0.1", d.port))
        viewer.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
        viewer.recv(1000)
        code, took = d.terminate()
        viewer.close()
        assert code == 0 and took < 2.0, (code, took, d.output()[-2000:])
        assert "stopped" in d.output()


@pytest.mark.parametrize("args, message", [
    (["--source", "/nonexistent/clip.mp4"], "/nonexistent/clip.mp4: source not found"),
    (["--source", str(VTEST), "--model", "/nonexistent/model.tflite"], "/nonexistent/model.tflite: model file not found"),
])
def test_bad_start_is_one_line_error(args, message):
    r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--port", "0", *args],
                       capture_output=True, text=True, timeout=60)
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgedetect: error:")]
    assert r.returncode == 2 and len(errors) == 1 and message in errors[0], r.stderr
    assert "Traceback" not in r.stderr


def test_classifier_through_the_daemon():
    """A model made by `edgedetect quantize` (int8 in and out) classifies a folder of images,
    its labels found next to it."""
    from pathlib import Path

    data = Path(__file__).parent / "data" / "digits"
    with DaemonProcess("run", "--model", str(data / "int8.tflite"), "--labels", str(data / "labels.txt"),
                       "--source", str(data / "images"), "--no-pace", "--loop", "--port", "0") as d:
        det = d.wait_for(lambda: (lambda j: j if j.get("classes") else None)(d.json("/api/detections")))
        # top_k (3) classes, those under the score threshold (0.5) left out
        assert det["detections"] == [] and 1 <= len(det["classes"]) <= 3
        assert all(c["score"] >= 0.5 and c["label"] in [str(i) for i in range(10)] for c in det["classes"])
        status, body = d.get("/snapshot.jpg")
        assert status == 200 and body[:2] == b"\xff\xd8"
