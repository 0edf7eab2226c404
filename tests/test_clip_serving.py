"""Clips served from disk: a download streams the file in pieces, so memory per client does not
grow with the clip; a slow but live client gets every byte however long that takes; one that
stops reading is dropped after [http] client_timeout; single ranges, impossible ones, several at
once and HEAD; a link planted as a clip is refused. A real daemon, real sockets, a real store."""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import MEDIA
from daemonproc import DaemonProcess
from edgedetect.storage.ondisk import CLIP
from edgedetect.storage.store import EventStore

JPEG = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
CLIP_BYTES = 60_000_000
CLIENTS = 30
RATE = 2_000_000  # bytes a second each slow client reads
SLOWEST_RATE, SLOWEST_BYTES = 200_000, 6_000_000  # one more, slower still, reads a range of the clip
CLIENT_TIMEOUT = 3.0  # [http] client_timeout: a tenth of the time a slow client needs for the clip
RSS_GROWTH_MB = 64  # the daemon's memory may grow by this much with every client downloading at once


def put_item(store: EventStore, n: int, t0: float, clip: bytes) -> str:
    """A finished review item of one object, with `clip` as its clip file."""
    rid = f"r{t0:.3f}-{n}"
    store.begin_review(rid, "hall", t0)
    store.begin(f"{t0:.3f}-{n}", n, "person", 0.9, t0, t0 + 1, (0.1, 0.1, 0.2, 0.4), (), JPEG, JPEG, camera="hall",
                review=rid)
    tmp = store.clip_tmp(rid)
    tmp.write_bytes(clip)
    assert store.add_clip(rid, tmp, t0 - 2, t0 + 20)
    assert store.end_review(rid, t0 + 18, json.dumps({"t0": t0, "objects": {}}).encode())
    return rid


@dataclass
class Served:
    """A clip in a store that a running daemon serves."""

    d: DaemonProcess
    big: str  # the review item with the large clip
    linked: str  # an item whose clip.mp4 was replaced by a link to a file outside the store
    size: int
    sha: str
    head: bytes  # the clip's first and last bytes, to check ranges against
    tail: bytes
    start_sha: str  # of its first SLOWEST_BYTES

    def status(self) -> dict[str, float]:
        """The daemon's resident memory now and at its peak (MB), its threads and CPU seconds."""
        stat = Path(f"/proc/{self.d.proc.pid}/stat").read_text().rpartition(")")[2].split()
        out: dict[str, float] = {"cpu": (int(stat[11]) + int(stat[12])) / os.sysconf("SC_CLK_TCK")}
        for line in Path(f"/proc/{self.d.proc.pid}/status").read_text().splitlines():
            key, _, value = line.partition(":")
            if key in ("VmRSS", "VmHWM"):
                out[key] = int(value.split()[0]) // 1024
            elif key == "Threads":
                out[key] = int(value)
        return out


@pytest.fixture(scope="module")
def served(tmp_path_factory) -> Served:
    tmp = tmp_path_factory.mktemp("clips")
    root = tmp / "events"
    clip = os.urandom(CLIP_BYTES)
    store = EventStore(root)
    t0 = time.time() - 600
    big = put_item(store, 1, t0, clip)
    linked = put_item(store, 2, t0 + 100, b"\0" * 1000)
    store.close()
    secret = tmp / "secret.mp4"
    secret.write_bytes(b"not the store's" * 100)
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
uri = "{MEDIA / 'pets.jpg'}"
[http]
port = 0
client_timeout = {CLIENT_TIMEOUT}
[record]
enabled = true
dir = "{root}"
labels = ["giraffe"]
""")
    with DaemonProcess("run", "--config", str(cfg)) as d:
        d.wait_for(lambda: d.json("/api/stats")["source_state"] == "ended", timeout=60)
        (root / linked / CLIP).unlink()
        (root / linked / CLIP).symlink_to(secret)
        yield Served(d, big, linked, len(clip), hashlib.sha256(clip).hexdigest(), clip[:1000], clip[-1000:],
                     hashlib.sha256(clip[:SLOWEST_BYTES]).hexdigest())


@dataclass
class Download:
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    received: int = 0
    sha: str = ""
    seconds: float = 0.0
    ended: str = ""  # how the body ended: "complete", "closed" (by the server) or the error


def download(port: int, path: str, rate: float = 0, stop_after: int = -1, stopped: threading.Event | None = None,
             extra: str = "") -> Download:
    """GET `path` over a socket with a small receive buffer, reading at most `rate` bytes a second
    (0: as fast as it comes). With `stop_after`, reading stops after that many body bytes until
    `stopped` is set, then goes on to the end."""
    out = Download()
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)  # so the kernel does not read for the client
    s.settimeout(60)
    try:
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                raise AssertionError(f"no response head: {head!r}")
            head += chunk
        head, _, body = head.partition(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        out.status = int(lines[0].split()[1])
        out.headers = {k.lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        length = int(out.headers["content-length"])
        h = hashlib.sha256(body)
        got = len(body)
        buf = bytearray(65536)
        t0 = time.monotonic()
        out.ended = "complete"
        while got < length:
            if got >= stop_after >= 0 and stopped is not None:
                stopped.wait()
                stop_after = -1
            try:
                n = s.recv_into(buf, min(len(buf), length - got))
            except OSError as e:
                out.ended = type(e).__name__
                break
            if n == 0:
                out.ended = "closed"
                break
            h.update(memoryview(buf)[:n])
            got += n
            ahead = got / rate - (time.monotonic() - t0) if rate else 0
            if ahead > 0:
                time.sleep(ahead)
        out.received, out.sha, out.seconds = got, h.hexdigest(), time.monotonic() - t0
    finally:
        s.close()
    return out


@pytest.mark.slow
def test_slow_clients_each_get_every_byte_while_memory_stays_flat(served: Served) -> None:
    before = served.status()
    results: list[Download] = []
    slowest: list[Download] = []
    peak = [before["VmRSS"]]
    done = threading.Event()

    def one() -> None:
        results.append(download(served.d.port, f"/reviews/{served.big}/clip.mp4", RATE))

    def sample() -> None:
        while not done.wait(0.5):
            peak.append(served.status()["VmRSS"])

    clients = [threading.Thread(target=one) for _ in range(CLIENTS)]
    clients.append(threading.Thread(target=lambda: slowest.append(download(
        served.d.port, f"/reviews/{served.big}/clip.mp4", SLOWEST_RATE,
        extra=f"Range: bytes=0-{SLOWEST_BYTES - 1}\r\n"))))
    sampler = threading.Thread(target=sample)
    sampler.start()
    for c in clients:
        c.start()
        time.sleep(0.1)  # all at once, some would be pushed out while still sending their request
    for c in clients:
        c.join()
    done.set()
    sampler.join()
    after = served.status()
    complete = [r for r in results if r.received == served.size and r.sha == served.sha]
    (last,) = slowest
    print(f"\n{CLIENTS} clients at {RATE / 1e6:.0f} MB/s each, a {served.size / 1e6:.0f} MB clip, client_timeout "
          f"{CLIENT_TIMEOUT} s: {len(complete)} got every byte (in up to {max(r.seconds for r in results):.1f} s; "
          f"bytes received {min(r.received for r in results) / 1e6:.1f}-{max(r.received for r in results) / 1e6:.1f}"
          f" MB); one at {SLOWEST_RATE / 1e3:.0f} kB/s got {last.received / 1e6:.1f} of {SLOWEST_BYTES / 1e6:.0f} MB "
          f"in {last.seconds:.1f} s ({last.ended}); "
          f"daemon RSS {before['VmRSS']} MB before, {max(peak)} MB at most while serving (peak since start "
          f"{before['VmHWM']} -> {after['VmHWM']} MB), {after['VmRSS']} MB after; threads {before['Threads']} -> "
          f"{after['Threads']}; daemon CPU {after['cpu'] - before['cpu']:.1f} s")
    assert len(results) == CLIENTS and all(r.status == 200 for r in results), [r.status for r in results]
    assert len(complete) == CLIENTS, sorted({r.ended for r in results})
    assert (last.status, last.received, last.sha) == (206, SLOWEST_BYTES, served.start_sha)
    # the peak since start counts only if it was reached while serving (the model's load peaks too)
    highest = max(max(peak), after["VmHWM"] if after["VmHWM"] > before["VmHWM"] else 0)
    assert highest - before["VmRSS"] < RSS_GROWTH_MB


@pytest.mark.slow
def test_a_client_that_stops_reading_is_dropped(served: Served) -> None:
    threads = served.status()["Threads"]
    stopped = threading.Event()
    result: list[Download] = []
    client = threading.Thread(target=lambda: result.append(download(
        served.d.port, f"/reviews/{served.big}/clip.mp4", stop_after=1_000_000, stopped=stopped)))
    client.start()
    served.d.wait_for(lambda: served.status()["Threads"] > threads, timeout=10, interval=0.05)
    t0 = time.monotonic()
    served.d.wait_for(lambda: served.status()["Threads"] <= threads, timeout=10 * CLIENT_TIMEOUT, interval=0.05)
    dropped_after = time.monotonic() - t0
    stopped.set()  # read what the kernel still holds for it, then the end
    client.join()
    (r,) = result
    print(f"\na client that stopped reading after 1 MB: its thread ended {dropped_after:.1f} s later "
          f"(client_timeout {CLIENT_TIMEOUT} s); it had {r.received / 1e6:.1f} of {served.size / 1e6:.0f} MB, "
          f"then {r.ended}")
    assert r.status == 200 and r.received < served.size and r.ended != "complete"


def request(served: Served, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    c = http.client.HTTPConnection("127.0.0.1", served.d.port, timeout=30)
    c.request(method, path, headers=headers or {})
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body, {k.lower(): v for k, v in r.getheaders()}


@pytest.mark.slow
def test_ranges_head_and_a_link_planted_as_a_clip(served: Served) -> None:
    clip, size = f"/reviews/{served.big}/clip.mp4", served.size
    status, body, h = request(served, "GET", clip, {"Range": "bytes=0-999"})
    assert (status, body, h["content-range"], h["content-length"]) == (206, served.head, f"bytes 0-999/{size}", "1000")
    status, body, h = request(served, "GET", clip, {"Range": "bytes=-1000"})
    assert (status, body, h["content-range"]) == (206, served.tail, f"bytes {size - 1000}-{size - 1}/{size}")
    status, body, h = request(served, "GET", clip, {"Range": f"bytes={size - 1000}-{size * 2}"})
    assert (status, body, h["content-range"]) == (206, served.tail, f"bytes {size - 1000}-{size - 1}/{size}")
    status, body, h = request(served, "GET", clip + "?download=1", {"Range": f"bytes={size}-"})
    assert (status, body, h["content-range"]) == (416, b"", f"bytes */{size}")
    assert h["content-disposition"] == f'attachment; filename="{served.big}.mp4"'
    status, body, h = request(served, "GET", clip, {"Range": "bytes=0-9,100-199"})  # several: the whole clip
    assert (status, int(h["content-length"]), hashlib.sha256(body).hexdigest()) == (200, size, served.sha)
    assert h["accept-ranges"] == "bytes" and "content-range" not in h
    status, body, h = request(served, "HEAD", clip)
    assert (status, body, h["content-length"], h["accept-ranges"]) == (200, b"", str(size), "bytes")
    status, body, h = request(served, "HEAD", clip, {"Range": "bytes=100-199"})
    assert (status, body, h["content-length"], h["content-range"]) == (206, b"", "100", f"bytes 100-199/{size}")
    status, body, _ = request(served, "GET", f"/reviews/{served.big}/boxes.json")
    assert status == 200 and json.loads(body)["objects"] == {}
    # the link is refused: 404 every time, one warning for it
    codes = [request(served, "GET", f"/reviews/{served.linked}/clip.mp4")[0] for _ in range(3)]
    codes.append(request(served, "GET", f"/reviews/{served.linked}/clip.mp4", {"Range": "bytes=0-9"})[0])
    def refused() -> list[str]:
        return [ln for ln in served.d.lines if "not served" in ln]

    served.d.wait_for(refused, timeout=10)  # the daemon's output is read on a thread of its own
    time.sleep(0.5)  # a line for a later request would be in by now
    assert codes == [404] * 4 and len(refused()) == 1 and f"{served.linked}/{CLIP}" in refused()[0], refused()
