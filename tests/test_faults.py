"""Faults provoked for real: a camera stream that goes away and comes back, a file cut short
while playing, a source that hangs, inference that fails, and every kind of bad input."""

from __future__ import annotations

import logging
import os
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import CLASSIFIER, DETECTOR, VTEST
from daemonproc import DaemonProcess
from mjpegserver import MjpegCamera


def write_config(tmp_path: Path, text: str) -> str:
    p = tmp_path / "edgedetect.toml"
    p.write_text(text)
    return str(p)


def snapshot_is_placeholder(d: DaemonProcess) -> bool:
    status, body = d.get("/snapshot.jpg")
    img = cv2.imdecode(np.frombuffer(body, np.uint8), cv2.IMREAD_GRAYSCALE)
    # the "no signal" card: flat dark grey with a little text
    return status == 200 and img is not None and float(np.median(img)) < 60 and img.std() < 40


@pytest.mark.slow
def test_stream_source_drops_and_returns(tmp_path):
    cam = MjpegCamera(VTEST).start()
    cfg = write_config(tmp_path, "[pipeline]\nstall_timeout = 4.0\n")
    try:
        with DaemonProcess("run", "--config", cfg, "--source", cam.url, "--port", "0", "--stats-interval", "1") as d:
            d.wait_for(lambda: d.json("/api/stats")["source_state"] == "running" and d.json("/api/stats")["frames_inferred"] > 5)
            assert d.get("/healthz")[0] == 200
            cam.stop()
            d.wait_for(lambda: d.json("/api/stats")["source_state"] == "reconnecting", timeout=15)
            stats = d.json("/api/stats")
            assert stats["camera_fps"] == 0.0
            d.wait_for(lambda: snapshot_is_placeholder(d), timeout=5)
            assert d.get("/healthz")[0] == 503
            time.sleep(2)  # a few backoff rounds against a closed port
            cam.start()
            d.wait_for(lambda: d.json("/api/stats")["source_state"] == "running", timeout=40)
            before = d.json("/api/stats")["frames_inferred"]
            d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > before + 10, timeout=15)
            d.wait_for(lambda: d.get("/healthz")[0] == 200, timeout=10)
            assert not snapshot_is_placeholder(d)
            out = d.output()
            assert "retrying in" in out and "Traceback" not in out
            code, took = d.terminate()
            assert code == 0 and took < 2.0
    finally:
        cam.stop()


@pytest.mark.slow
def test_file_truncated_while_playing(tmp_path):
    clip = tmp_path / "clip.avi"
    shutil.copy(VTEST, clip)
    with DaemonProcess("run", "--source", str(clip), "--loop", "--no-pace", "--port", "0", "--threads", "1") as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 10)
        size = clip.stat().st_size
        with clip.open("r+b") as f:
            f.truncate(size // 3)  # cut while it is being read
        captured = d.json("/api/stats")["frames_captured"]
        d.wait_for(lambda: d.json("/api/stats")["frames_captured"] > captured + 300, timeout=30)
        # emptied: nothing left to play, so the source reconnects with backoff and the daemon stays up
        clip.write_bytes(b"")
        d.wait_for(lambda: d.json("/api/stats")["source_state"] == "reconnecting", timeout=30)
        assert d.proc.poll() is None
        shutil.copy(VTEST, clip)
        d.wait_for(lambda: d.json("/api/stats")["source_state"] == "running", timeout=40)
        assert "Traceback" not in d.output()


@pytest.mark.slow
def test_source_that_hangs_is_restarted_then_failed(tmp_path):
    """A FIFO fed the start of a real video, then kept open with nothing more: the decoder blocks
    in read() for ever. The stall watchdog restarts the source, then gives up and reports it."""
    fifo = tmp_path / "camera.avi"
    os.mkfifo(fifo)
    data = VTEST.read_bytes()[:400_000]  # about 3 s of video
    stop_writer = threading.Event()

    def writer() -> None:
        with open(fifo, "wb") as f:
            f.write(data)
            f.flush()
            stop_writer.wait(120)

    t = threading.Thread(target=writer, daemon=True)
    t.start()
    cfg = write_config(tmp_path, "[pipeline]\nstall_timeout = 1.5\n")
    with DaemonProcess("run", "--config", cfg, "--source", str(fifo), "--port", "0", "--threads", "1") as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 3)
        d.wait_for(lambda: d.get("/healthz")[0] == 503, timeout=15)
        status, body = d.get("/healthz")
        assert b"stalled" in body or b"reconnecting" in body
        d.wait_for(lambda: d.json("/api/stats")["source_state"] == "failed", timeout=30)
        out = d.output()
        assert "restarting it (1/3)" in out and "giving up" in out
        assert d.get("/healthz")[0] == 503
        stop_writer.set()
        code, took = d.terminate()
        assert code == 0 and took < 2.0, d.output()[-2000:]


def test_inference_failures_exit_nonzero(caplog):
    """invoke() raising: logged once with a count, frames skipped, after K in a row exit code 1."""
    from edgedetect import config
    from edgedetect.daemon import Daemon

    cfg = config.load(None, {"source.uri": str(VTEST), "http.enabled": False, "pipeline.max_inference_failures": 5})
    daemon = Daemon(cfg)
    calls = []
    stop = threading.Event()

    def start_then_break() -> None:
        while daemon.pipeline is None:
            time.sleep(0.02)
        daemon.pipeline.first_result.wait(20)
        calls.append(daemon.pipeline.snapshot()["frames_inferred"])

        def broken() -> None:
            raise RuntimeError("delegate failed")
        daemon.model.invoke = broken

    threading.Thread(target=start_then_break, daemon=True).start()
    timer = threading.Timer(30, stop.set)
    timer.start()
    with caplog.at_level(logging.INFO):
        code = daemon.run_until(stop)
    timer.cancel()
    assert code == 1 and not stop.is_set()
    errors = [r for r in caplog.records if "inference failed on frame" in r.getMessage()]
    assert len(errors) == 1 and "delegate failed" in errors[0].getMessage()
    assert any("inference failed 5 times in a row" in r.getMessage() for r in caplog.records)
    assert daemon.pipeline.detector.inference_errors == 5


def test_worker_recovers_after_a_few_failures():
    from conftest import worker_on_one_camera
    from edgedetect.detect.families import load_model
    from edgedetect.detect.model import DetectFilter
    from edgedetect.frames import Frame

    model = load_model(DETECTOR, None, 1)
    real_invoke = model.invoke
    failures = iter([True, True, False, False, False])
    model.invoke = lambda: (_ for _ in ()).throw(RuntimeError("flaky")) if next(failures, False) else real_invoke()
    worker, cam, stats = worker_on_one_camera(model, DetectFilter(), max_failures=3)
    slot = cam.slot
    worker.start()
    img = cv2.imread(str(VTEST.parent / "pets.jpg"))
    for i in range(5):
        slot.put(Frame(i, 0.0, img))
        time.sleep(0.3)
    worker.stop()
    worker.join(2)
    assert stats.inference_errors == 2 and stats.inference.total == 3 and not worker.failed.is_set()


# --- bad input: one line naming the file, key or value; exit code 2; no traceback ------------

def truncated_model(tmp_path: Path) -> Path:
    p = tmp_path / "truncated.tflite"
    p.write_bytes(DETECTOR.read_bytes()[:300_000])
    return p


def two_output_model(tmp_path: Path) -> Path:
    """The real classifier with a second output added: neither detector nor classifier."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(CLASSIFIER.read_bytes(), 0))
    graph = model.subgraphs[0]
    graph.outputs = [*graph.outputs, int(graph.operators[-3].outputs[0])]
    b = flatbuffers.Builder(0)
    b.Finish(model.Pack(b), file_identifier=b"TFL3")
    p = tmp_path / "two_outputs.tflite"
    p.write_bytes(b.Output())
    return p


def busy_port() -> tuple[socket.socket, int]:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    s.listen(1)
    return s, s.getsockname()[1]


BAD_INPUTS = {
    "missing model": (lambda tp: ["--model", str(tp / "nope.tflite")], "nope.tflite: model file not found"),
    "truncated model": (lambda tp: ["--model", str(truncated_model(tp))], "truncated.tflite: cannot load model"),
    "not a model": (lambda tp: ["--model", str(VTEST)], "vtest.avi: not a TFLite model"),
    "unsupported outputs": (lambda tp: ["--model", str(two_output_model(tp))],
                            "two_outputs.tflite: unsupported outputs (MobilenetV2/Predictions/Softmax [1x1001]"),
    "too few labels": (lambda tp: ["--model", str(DETECTOR), "--labels", str(_write(tp / "l.txt", "person\ncar\n"))],
                       "l.txt: ids up to 1 for a detector with 90 classes"),
    "empty labels": (lambda tp: ["--model", str(DETECTOR), "--labels", str(_write(tp / "e.txt", "\n"))],
                     "e.txt: labels file is empty"),
    "unknown key": (lambda tp: ["--config", str(_write(tp / "c.toml", "[http]\nprot = 1\n"))],
                    "unknown key 'prot' (did you mean 'port'?)"),
    "wrong type": (lambda tp: ["--config", str(_write(tp / "c.toml", "[detect]\nthreshold = \"high\"\n"))],
                   "detect.threshold: expected a number, got 'high'"),
    "out of range": (lambda tp: ["--config", str(_write(tp / "c.toml", "[model]\nthreads = -2\n"))],
                     "model.threads: expected a value from 0 to 64, got -2"),
    "unreadable config": (lambda tp: ["--config", str(tp)], "is a directory, expected a TOML file"),
    "missing config": (lambda tp: ["--config", str(tp / "none.toml")], "none.toml: config file not found"),
    "missing source": (lambda tp: ["--source", str(tp / "nope.mp4")], "nope.mp4: source not found"),
    "missing camera": (lambda tp: ["--source", "/dev/video97"], "/dev/video97: camera device not found"),
    "open network port": (lambda tp: ["--host", "0.0.0.0"], "http.host = '0.0.0.0' serves the network: set http.token "
                          "in the config, or give --token-file FILE or the EDGEDETECT_TOKEN environment variable"),
    "bad flag value": (lambda tp: ["--port", "eighty"], "argument --port: invalid int value: 'eighty'"),
}


def _write(p: Path, text: str) -> Path:
    p.write_text(text)
    return p


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_one_line(tmp_path, case):
    make_args, expected = BAD_INPUTS[case]
    args = ["run", "--source", str(VTEST), "--port", "0", *make_args(tmp_path)]
    r = subprocess.run([sys.executable, "-m", "edgedetect", *args], capture_output=True, text=True, timeout=60)
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1 and expected in errors[0], r.stderr
    assert "Traceback" not in r.stderr


@pytest.mark.slow
@pytest.mark.skipif(bool(list(Path("/dev").glob("video*"))), reason="this machine has a camera device")
def test_camera_that_does_not_open_is_one_line_with_a_hint():
    """No camera at all: OpenCV's own [ WARN ] lines stay out, our line says what there is."""
    r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--source", "0", "--port", "0"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "[ WARN" not in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert r.stderr.splitlines()[-1] == ("edgedetect: error: 0: cannot open the camera (no /dev/video* device: plug "
                                         "the camera in ('lsusb' lists USB devices))")
    assert "XNNPACK delegate" not in r.stderr.replace("threads, XNNPACK delegate for CPU", "")


def test_port_in_use(tmp_path):
    sock, port = busy_port()
    try:
        r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--source", str(VTEST), "--port", str(port)],
                           capture_output=True, text=True, timeout=60)
    finally:
        sock.close()
    assert r.returncode == 2 and f"cannot listen on 127.0.0.1:{port} (in use)" in r.stderr
    assert "Traceback" not in r.stderr


def test_debug_shows_traceback(tmp_path):
    r = subprocess.run([sys.executable, "-m", "edgedetect", "--debug", "run", "--model", str(tmp_path / "x.tflite"),
                        "--source", str(VTEST)], capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "Traceback" in r.stderr and "x.tflite: model file not found" in r.stderr


def test_sigterm_with_viewers_and_source_reconnecting(tmp_path):
    """Shutdown under load: three viewers connected, the camera gone, SIGTERM: out within 2 s."""
    cam = MjpegCamera(VTEST).start()
    try:
        with DaemonProcess("run", "--source", cam.url, "--port", "0") as d:
            d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 5)
            viewers = []
            for _ in range(3):
                s = socket.create_connection(("127.0.0.1", d.port), timeout=5)
                s.sendall(b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")
                s.recv(100)
                viewers.append(s)
            cam.stop()
            d.wait_for(lambda: d.json("/api/stats")["source_state"] == "reconnecting", timeout=15)
            code, took = d.terminate()
            for s in viewers:
                s.close()
            assert code == 0 and took < 2.0, (code, took)
            assert "stopped" in d.output() and "Traceback" not in d.output()
    finally:
        cam.stop()
