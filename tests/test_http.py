"""HTTP under abuse and load, over real sockets: bad requests, limits, tokens, slow and many viewers."""

from __future__ import annotations

import socket
import threading
import time
import urllib.request

import pytest

from conftest import VTEST
from daemonproc import DaemonProcess


def raw(port: int, request: bytes, timeout: float = 5.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(request)
        data = b""
        try:
            while chunk := s.recv(65536):
                data += chunk
                if len(data) > 200_000:
                    break
        except TimeoutError:
            pass
        return data


def status_of(response: bytes) -> int:
    return int(response.split(b" ", 2)[1]) if response.startswith(b"HTTP/") else 0


class Viewer(threading.Thread):
    """Reads /stream.mjpg as fast as it comes (or not at all) and counts frames."""

    def __init__(self, port: int, token: str = "", read: bool = True):
        super().__init__(daemon=True)
        self.port, self.token, self.read = port, token, read
        self.frames = 0
        self.status = 0
        self.stop = threading.Event()
        self.sock: socket.socket | None = None

    def run(self) -> None:
        q = f"?token={self.token}" if self.token else ""
        s = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        if not self.read:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # fills at once: a stuck client
        self.sock = s
        s.sendall(f"GET /stream.mjpg{q} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
        if not self.read:
            self.stop.wait(120)
            s.close()
            return
        buf = b""
        try:
            while not self.stop.is_set():
                chunk = s.recv(262144)
                if not chunk:
                    break
                buf += chunk
                if not self.status and b"\r\n" in buf:
                    self.status = status_of(buf)
                marker = b"Content-Type: image/jpeg"
                self.frames += buf.count(marker)
                buf = buf[-(len(marker) - 1):]  # a marker cut between two reads is counted once
        except OSError:
            pass
        s.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    cfg = tmp_path_factory.mktemp("cfg") / "edgedetect.toml"
    cfg.write_text("[http]\nmax_viewers = 3\nclient_timeout = 2.0\n")
    with DaemonProcess("run", "--config", str(cfg), "--source", str(VTEST), "--loop", "--port", "0",
                       "--stats-interval", "1") as d:
        d.wait_for(lambda: d.json("/api/detections")["frame"] is not None)
        yield d


@pytest.mark.parametrize("request_bytes, expected", [
    (b"GET /etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET /../../../etc/passwd HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"GET /static/index.html HTTP/1.1\r\nHost: localhost\r\n\r\n", 404),
    (b"POST /api/stats HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n", 405),
    (b"DELETE /snapshot.jpg HTTP/1.1\r\nHost: localhost\r\n\r\n", 405),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n", 400),
    (b"HELLO\r\n\r\n", 400),
    (b"GET /" + b"a" * 70_000 + b" HTTP/1.1\r\n\r\n", 414),
    (b"GET / HTTP/1.1\r\n" + b"".join(b"X-H%d: v\r\n" % i for i in range(150)) + b"\r\n", 431),
])
def test_bad_requests_rejected(daemon, request_bytes, expected):
    assert status_of(raw(daemon.port, request_bytes)) == expected
    assert daemon.get("/healthz")[0] == 200  # and the daemon carries on


def test_405_names_allowed_methods(daemon):
    resp = raw(daemon.port, b"PUT /api/stats HTTP/1.1\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n")
    assert b"Allow: GET, HEAD" in resp


def test_idle_connection_dropped(daemon):
    with socket.create_connection(("127.0.0.1", daemon.port), timeout=10) as s:
        s.sendall(b"GET / HTTP/1.1\r\n")  # never finishes its request
        t0 = time.monotonic()
        assert s.recv(1000) == b""  # the server hung up
        assert 1.5 <= time.monotonic() - t0 < 6  # after client_timeout (2 s), not held for ever


def test_max_viewers_then_503(daemon):
    viewers = [Viewer(daemon.port) for _ in range(3)]
    for v in viewers:
        v.start()
    daemon.wait_for(lambda: daemon.json("/api/stats")["viewers"] == 3)
    assert status_of(raw(daemon.port, b"GET /stream.mjpg HTTP/1.1\r\nHost: localhost\r\n\r\n")) == 503
    for v in viewers:
        v.stop.set()
    daemon.wait_for(lambda: daemon.json("/api/stats")["viewers"] == 0, timeout=10)
    assert all(v.status == 200 and v.frames > 0 for v in viewers)


@pytest.mark.slow
def test_slow_viewer_hurts_nobody(daemon):
    before = daemon.json("/api/stats")
    stuck = Viewer(daemon.port, read=False)
    stuck.start()
    good = Viewer(daemon.port)
    good.start()
    time.sleep(5)
    after = daemon.json("/api/stats")
    good.stop.set()
    # the stuck one was cut off after client_timeout; the pipeline and the other viewer kept pace
    daemon.wait_for(lambda: daemon.json("/api/stats")["viewers"] == 0, timeout=10)
    assert after["published_fps"] >= 0.9 * before["published_fps"]
    assert good.frames >= 0.8 * 5 * before["published_fps"]
    stuck.stop.set()


def test_token_required_when_set(tmp_path):
    with DaemonProcess("run", "--source", str(VTEST), "--loop", "--port", "0", "--token", "s3cret") as d:
        assert d.get("/api/stats")[0] == 401
        assert d.get("/stream.mjpg")[0] == 401
        assert d.get("/api/stats?token=wrong")[0] == 401
        assert d.get("/api/stats?token=s3cret")[0] == 200
        req = urllib.request.Request(d.url("/api/stats"), headers={"Authorization": "Bearer s3cret"})
        assert urllib.request.urlopen(req, timeout=5).status == 200
        d.wait_for(lambda: d.get("/snapshot.jpg?token=s3cret")[0] == 200)
        req = urllib.request.Request(d.url("/snapshot.jpg"), headers={"X-Edgedetect-Token": "s3cret"})
        assert urllib.request.urlopen(req, timeout=5).status == 200
        v = Viewer(d.port, token="s3cret")
        v.start()
        d.wait_for(lambda: v.frames >= 3)
        v.stop.set()


@pytest.mark.slow
def test_twenty_viewers_keep_the_rate(tmp_path):
    """20 concurrent viewers for 30 s: published_fps within 10% of one viewer's."""
    cfg = tmp_path / "c.toml"
    cfg.write_text("[http]\nmax_viewers = 25\n")
    with DaemonProcess("run", "--config", str(cfg), "--source", str(VTEST), "--loop", "--port", "0") as d:
        one = Viewer(d.port)
        one.start()
        time.sleep(8)
        single = d.json("/api/stats")["published_fps"]
        one.stop.set()
        viewers = [Viewer(d.port) for _ in range(20)]
        for v in viewers:
            v.start()
        samples = []
        for _ in range(6):
            time.sleep(5)
            samples.append(d.json("/api/stats")["published_fps"])
        for v in viewers:
            v.stop.set()
        assert single > 8
        assert min(samples) >= 0.9 * single, (single, samples)
        assert all(v.frames >= 0.8 * 30 * single for v in viewers), [v.frames for v in viewers]
