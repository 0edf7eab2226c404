"""sd_notify: the client against a datagram socket the test owns, the watchdog policy, and the
real daemon as systemd would run it (Type=notify, WatchdogSec), including a stalled camera."""

from __future__ import annotations

import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import pytest
from conftest import MEDIA, VTEST
from daemonproc import DaemonProcess
from fakehooks import make_hooks

from edgedetect.pipeline.health import progress
from edgedetect.pipeline.state import SourceState
from edgedetect.sinks.systemd import ServiceNotifier, attach, summary
from edgedetect.system import notify


class NotifySocket:
    """An AF_UNIX datagram socket standing in for systemd's notify socket."""

    def __init__(self, path: str, abstract: bool = False):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind("\0" + path if abstract else path)
        self.sock.settimeout(0.2)
        self.address = "@" + path if abstract else path
        self.messages: list[tuple[float, str]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            self.messages.append((time.monotonic(), data.decode()))

    def lines(self) -> list[tuple[float, str]]:
        return [(t, line) for t, m in list(self.messages) for line in m.split("\n")]

    def wait_for(self, predicate, timeout: float = 20.0, after: float = 0.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for t, line in self.lines():
                if t > after and predicate(line):
                    return t, line
            time.sleep(0.05)
        raise AssertionError(f"no matching notify line in {timeout} s: {self.lines()[-20:]}")

    def close(self) -> None:
        self._stop.set()
        self.sock.close()
        self._thread.join(1)


@pytest.fixture
def notify_sock(tmp_path: Path):
    s = NotifySocket(str(tmp_path / "notify.sock"))
    yield s
    s.close()


# --- the client ------------------------------------------------------------------------------

def test_client_sends_one_datagram_to_a_path(notify_sock: NotifySocket) -> None:
    env = {"NOTIFY_SOCKET": notify_sock.address}
    assert notify.ready("12.0 fps", env=env)
    assert notify.extend_timeout(30, "loading model", env=env)
    notify_sock.wait_for(lambda line: line.startswith("EXTEND"))
    assert [m for _, m in notify_sock.messages] == [
        "READY=1\nSTATUS=12.0 fps",
        "EXTEND_TIMEOUT_USEC=30000000\nSTATUS=loading model",
    ]


def test_client_abstract_namespace(tmp_path: Path) -> None:
    s = NotifySocket(f"edgedetect-test-{os.getpid()}", abstract=True)
    try:
        assert notify.stopping(env={"NOTIFY_SOCKET": s.address})
        s.wait_for(lambda line: line == "STOPPING=1")
    finally:
        s.close()


def test_client_is_silent_without_socket(tmp_path: Path) -> None:
    assert not notify.notify("READY=1", env={})
    assert not notify.enabled({})
    # A socket that went away: reported, never raised.
    assert not notify.notify("READY=1", env={"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})


def test_watchdog_interval_is_half_and_for_this_pid() -> None:
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000"}) == 15.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 15.0
    assert notify.watchdog_interval({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert notify.watchdog_interval({}) is None
    assert notify.watchdog_interval({"WATCHDOG_USEC": "x"}) is None


def test_status_text_is_one_line() -> None:
    assert notify.status_text("a\nb  c") == "STATUS=a b c"


# --- the policy --------------------------------------------------------------------------------

def test_progress_rules() -> None:
    # (first_result, source_state, last_result_t, capture_idle_s, now, stall_timeout)
    assert progress(False, "running", 0.0, 0.0, 100.0, 10.0).ok is False
    assert progress(True, "running", 95.0, 0.1, 100.0, 10.0).ok is True
    stuck = progress(True, "running", 80.0, 0.1, 100.0, 10.0)  # frames arrive, no result
    assert not stuck.ok and stuck.state == "stalled: no frame processed for 20 s"
    hung = progress(True, "running", 95.0, 12.0, 100.0, 10.0)  # camera read never returns
    assert not hung.ok and hung.state == "stalled: no frame from the source for 12 s"
    assert progress(True, "reconnecting", 0.0, 2.0, 100.0, 10.0).ok  # capture thread alive, retrying
    assert not progress(True, "reconnecting", 0.0, 11.0, 100.0, 10.0).ok
    assert progress(True, "ended", 0.0, 50.0, 100.0, 10.0).ok
    failed = progress(True, "failed", 99.0, 0.0, 100.0, 10.0)
    assert not failed.ok and failed.state.startswith("stalled: the source failed")


def test_summary() -> None:
    snap = {"inference_fps": 9.84, "inference_ms": {"p50": 31.6}, "temperature_c": 61.2,
            "throttled_flags": ["throttled", "under_voltage_occurred"]}
    assert summary(snap) == "9.8 fps, inference 32 ms, 61 C, throttled"
    assert summary(None) == ""


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class FakePipeline:
    """The recorded state the pipeline's own progress rule judges (Pipeline.progress)."""

    def __init__(self, stall_timeout: float, clock: FakeClock):
        self.first = False
        self.last_result_t = 0.0
        self.stall_timeout = stall_timeout
        self.clock = clock

    def tick(self, svc: ServiceNotifier) -> None:
        p = progress(self.first, SourceState.RUNNING, self.last_result_t, 0.0, self.clock.t, self.stall_timeout)
        svc.tick(p, self.first, self.clock.t)


def test_stuck_inference_stops_pings_while_frames_still_arrive() -> None:
    clock = FakeClock()
    sent: list[tuple[float, tuple[str, ...]]] = []
    d = FakePipeline(5.0, clock)
    svc = ServiceNotifier(watchdog_s=1.0, send=lambda *l: sent.append((clock.t, l)) or True)
    for _ in range(4):  # starting: nothing is sent, not even a watchdog ping
        d.tick(svc)
        clock.t += 0.25
    assert sent == []
    d.first = True
    d.last_result_t = clock.t
    svc.sink({"inference_fps": 10.0, "inference_ms": {"p50": 20.0}})
    d.tick(svc)
    assert sent[0][1] == ("READY=1", "WATCHDOG=1", "STATUS=10.0 fps, inference 20 ms")
    # Results keep coming for 3 s: a ping each second.
    for _ in range(12):
        clock.t += 0.25
        d.last_result_t = clock.t
        d.tick(svc)
    pings = [t for t, lines in sent if "WATCHDOG=1" in lines]
    assert len(pings) == 4 and all(b - a >= 1.0 for a, b in zip(pings, pings[1:]))
    # Inference hangs (the camera still delivers, but no result): pings stop after 5 s.
    hung_at = clock.t
    for _ in range(40):
        clock.t += 0.25
        d.tick(svc)
    late = [t for t, lines in sent if "WATCHDOG=1" in lines and t > hung_at + 5.0]
    assert late == []
    assert any(l.startswith("STATUS=stalled: no frame processed for") for _, ls in sent for l in ls)
    svc.stop()
    assert sent[-1][1] == ("STOPPING=1", "STATUS=stopping")


def test_attach_needs_notify_socket(notify_sock: NotifySocket) -> None:
    hooks, reg = make_hooks()
    assert attach(hooks, env={}) is None and reg.ticks == []
    svc = attach(hooks, env={"NOTIFY_SOCKET": notify_sock.address, "WATCHDOG_USEC": "2000000"})
    assert svc is not None and svc.watchdog_s == 1.0
    assert reg.ticks == [svc.tick] and reg.stats == [svc.sink]


# --- the real daemon ----------------------------------------------------------------------------

def _daemon_env(sock: NotifySocket, watchdog_usec: int = 1_000_000) -> dict[str, str]:
    return {"NOTIFY_SOCKET": sock.address, "WATCHDOG_USEC": str(watchdog_usec)}


@pytest.mark.timeout(60)
def test_daemon_ready_watchdog_status_stopping(notify_sock: NotifySocket) -> None:
    with DaemonProcess("run", "--source", str(VTEST), "--port", "0", "--stats-interval", "1",
                       env=_daemon_env(notify_sock)) as d:
        t_ready, _ = notify_sock.wait_for(lambda line: line == "READY=1")
        stats = d.json("/api/stats")
        assert stats["frames_published"] >= 1
        # Pings every WATCHDOG_USEC/2 = 0.5 s while frames flow.
        time.sleep(2.5)
        pings = [t for t, line in notify_sock.lines() if line == "WATCHDOG=1"]
        assert len(pings) >= 4, notify_sock.lines()
        assert min(pings) >= t_ready
        notify_sock.wait_for(lambda line: line.startswith("STATUS=") and " fps" in line)
        code, took = d.terminate()
        assert code == 0
    notify_sock.wait_for(lambda line: line == "STOPPING=1", timeout=2)
    # While the model loads only the start timeout is extended; READY comes with the first result,
    # and no watchdog ping before it.
    first = notify_sock.messages[0][1].split("\n")
    assert first == ["EXTEND_TIMEOUT_USEC=120000000", "STATUS=loading model"], notify_sock.messages[:3]
    second = notify_sock.messages[1][1].split("\n")
    assert second[0] == "READY=1", notify_sock.messages[:3]


class MjpegCamera:
    """A network camera the test controls: serves JPEG frames while `flowing` is set."""

    def __init__(self) -> None:
        img = cv2.imread(str(MEDIA / "pets.jpg"))
        self.jpeg = cv2.imencode(".jpg", img)[1].tobytes()
        self.flowing = threading.Event()
        self.sent = 0
        self._closed = threading.Event()
        cam = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=frame")
                self.end_headers()
                try:
                    while not cam._closed.is_set():
                        if not cam.flowing.wait(0.1):
                            continue
                        self.wfile.write(b"--frame\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n"
                                         % len(cam.jpeg) + cam.jpeg + b"\r\n")
                        self.wfile.flush()
                        cam.sent += 1
                        time.sleep(0.1)
                except OSError:
                    pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_port}/stream.mjpg"

    def close(self) -> None:
        self._closed.set()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(2)


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_daemon_ready_waits_for_a_frame_and_a_stalled_camera_stops_the_watchdog(
        notify_sock: NotifySocket, tmp_path: Path) -> None:
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text("[pipeline]\nstall_timeout = 1.0\n[motion]\nenabled = \"off\"\n")
    cam = MjpegCamera()
    d = DaemonProcess("run", "--config", str(cfg), "--source", cam.url, "--port", "0",
                      "--stats-interval", "1", env=_daemon_env(notify_sock))
    try:
        d.proc = None
        threading.Thread(target=d.start, daemon=True).start()
        # The camera sends nothing yet: the daemon may be up, but it must not say READY.
        time.sleep(2.5)
        assert not any(line == "READY=1" for _, line in notify_sock.lines()), notify_sock.lines()
        t_flow = time.monotonic()
        cam.flowing.set()
        t_ready, _ = notify_sock.wait_for(lambda line: line == "READY=1", timeout=20)
        assert t_ready > t_flow
        # Healthy: pings arrive.
        time.sleep(2.0)
        assert sum(1 for t, line in notify_sock.lines() if line == "WATCHDOG=1" and t > t_ready) >= 3
        # The camera hangs: connections stay open but no frame comes. The daemon restarts the
        # source a few times (pings go on: the capture thread is working), then marks it failed:
        # from then on no ping, and STATUS says why, so systemd's watchdog restarts the service.
        cam.flowing.clear()
        t_hang = time.monotonic()
        t_stalled, status = notify_sock.wait_for(lambda line: line.startswith("STATUS=stalled"), timeout=20,
                                                 after=t_hang)
        assert status.startswith("STATUS=stalled: the source failed (no frame after restarts)"), status
        time.sleep(3.0)  # six ping periods
        late_pings = [t for t, line in notify_sock.lines() if line == "WATCHDOG=1" and t >= t_stalled]
        assert late_pings == [], (late_pings, t_stalled)
        last_ping = max(t for t, line in notify_sock.lines() if line == "WATCHDOG=1")
        assert time.monotonic() - last_ping > 3.0  # systemd with WatchdogSec=1 would have fired
        assert "watchdog pings paused" in d.output()
        assert d.terminate()[0] == 0
    finally:
        d.stop()
        cam.close()
