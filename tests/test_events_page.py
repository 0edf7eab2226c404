"""The event history over HTTP: /api/events and its filters, the files, ids and paths checked,
the token rules, deleting; the /events page in headless Chromium playing a clip; the zones
drawn over the live viewer with a toggle."""

from __future__ import annotations

import http.client
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from conftest import VTEST
from daemonproc import DaemonProcess

pytest.importorskip("av")

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars",
         "--autoplay-policy=no-user-gesture-required"]
FRONT = [[0.0, 0.45], [0.55, 0.45], [0.55, 1.0], [0.0, 1.0]]
KEYS = {"id", "label", "score", "start", "end", "zones", "snapshot", "clip"}


def config(tmp: Path, extra: str = "") -> Path:
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
uri = "{VTEST}"
loop = true
[http]
port = 0
{extra}
[record]
enabled = true
dir = "{tmp / 'events'}"
pre_s = 2
post_s = 1
max_clip_s = 3
[[zones]]
name = "front"
polygon = {json.dumps(FRONT)}
[[masks]]
polygon = [[0.9, 0.0], [1.0, 0.0], [1.0, 0.1]]
""")
    return cfg


@pytest.fixture(scope="module")
def daemon(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("events")
    with DaemonProcess("run", "--config", str(config(tmp))) as d:
        d.wait_for(lambda: d.json("/api/stats")["record"]["clips_written"] >= 2, timeout=60)
        yield d


def raw(d: DaemonProcess, method: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, bytes, dict]:
    """A request sent as written: no client-side path normalisation."""
    c = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
    c.putrequest(method, path, skip_accept_encoding=True)
    for k, v in (headers or {}).items():
        c.putheader(k, v)
    c.endheaders()
    r = c.getresponse()
    body = r.read()
    c.close()
    return r.status, body, dict(r.getheaders())


def events(d: DaemonProcess, query: str = "") -> list[dict]:
    return d.json("/api/events" + query)["events"]


def test_api_events_and_filters(daemon) -> None:
    evs = events(daemon)
    assert len(evs) >= 3
    assert [e["start"] for e in evs] == sorted((e["start"] for e in evs), reverse=True)  # newest first
    for e in evs:
        assert KEYS <= set(e) and e["label"] == "person" and set(e["zones"]) <= {"front"}
        assert e["snapshot"] == f"/events/{e['id']}/snapshot.jpg"
        assert e["clip"] is None or e["clip"] == f"/reviews/{e['review']}/clip.mp4"  # its review item's
        assert e["end"] is None or e["end"] >= e["start"]
    with_clip = [e for e in evs if e["clip"]]
    assert with_clip
    front = events(daemon, "?zone=front&limit=1000")
    assert front and all("front" in e["zones"] for e in front)
    everything = events(daemon, "?limit=1000")
    assert len(front) < len(everything)
    assert events(daemon, "?label=car") == []
    assert len(events(daemon, "?limit=2")) == 2
    middle = everything[len(everything) // 2]["start"]
    assert all(e["start"] >= middle for e in events(daemon, f"?since={middle}&limit=1000"))
    for bad in ("?limit=x", "?limit=-1", "?limit=100000", "?since=yesterday", "?since=nan"):
        status, body = daemon.get("/api/events" + bad)
        assert status == 400, bad
    one = with_clip[0]
    assert daemon.json(f"/api/events/{one['id']}")["id"] == one["id"]
    status, jpg = daemon.get(one["snapshot"])
    assert status == 200 and cv2.imdecode(np.frombuffer(jpg, np.uint8), cv2.IMREAD_COLOR).shape == (576, 768, 3)
    status, clip, headers = raw(daemon, "GET", one["clip"])
    assert status == 200 and headers["Content-Type"] == "video/mp4" and clip[4:8] == b"ftyp"
    status, body, headers = raw(daemon, "HEAD", one["clip"])
    assert status == 200 and body == b"" and int(headers["Content-Length"]) == len(clip)


@pytest.mark.parametrize("path", [
    "/events/../index.sqlite3",
    "/events/..%2findex.sqlite3",
    "/events/%2e%2e/%2e%2e/etc/passwd",
    "/events/ID/../../index.sqlite3",
    "/events/ID/index.sqlite3",
    "/events/ID/snapshot.jpg/..",
    "/events/ID/.clip.mp4.tmp",
    "/events/ID/clip.avi",
    "/events/ID/clip.mp4",  # an event's clip is its review item's
    "/reviews/ID/clip.mp4",
    "/reviews/rID/../index.sqlite3",
    "/reviews/rID/review.json",
    "/reviews/r1.000-1/clip.mp4",
    "/api/reviews/r1.000-1",
    "/api/reviews/..",
    "/events/ID",
    "/events/ID/",
    "/events/1.000-1/snapshot.jpg",  # a well-formed id that is not listed
    "/events/%2Ftmp/snapshot.jpg",
    "/events//etc/passwd/snapshot.jpg",
    "/api/events/..",
    "/api/events/ID/../..",
    "/api/events/1.000-1",
    "/api/events/" + "9" * 200,
])
def test_ids_and_paths_are_checked(daemon, path) -> None:
    eid = events(daemon)[0]["id"]
    status, body, _ = raw(daemon, "GET", path.replace("ID", eid))
    assert status == 404, (path, status, body[:80])


def test_delete(daemon) -> None:
    e = events(daemon, "?limit=1000")[-1]  # the oldest
    status, body, _ = raw(daemon, "DELETE", f"/api/events/{e['id']}")
    assert status == 200 and json.loads(body) == {"deleted": e["id"]}
    assert daemon.get(f"/api/events/{e['id']}")[0] == 404 and daemon.get(e["snapshot"])[0] == 404
    assert raw(daemon, "DELETE", f"/api/events/{e['id']}")[0] == 404
    assert raw(daemon, "DELETE", f"/events/{events(daemon)[0]['id']}/snapshot.jpg")[0] == 405
    assert raw(daemon, "POST", "/api/events")[0] == 405


def test_token_rules(tmp_path: Path) -> None:
    with DaemonProcess("run", "--config", str(config(tmp_path, 'token = "s3cret"'))) as d:
        for path in ("/events", "/api/events", "/api/events/1.000-1", "/events/1.000-1/snapshot.jpg",
                     "/events/../index.sqlite3", "/api/zones"):
            assert raw(d, "GET", path)[0] == 401, path
            assert raw(d, "GET", path + "?token=wrong")[0] == 401, path
        assert raw(d, "DELETE", "/api/events/1.000-1")[0] == 401
        assert raw(d, "GET", "/events?token=s3cret")[0] == 200
        assert raw(d, "GET", "/api/events", {"X-Edgedetect-Token": "s3cret"})[0] == 200
        assert raw(d, "GET", "/api/events", {"Authorization": "Bearer s3cret"})[0] == 200
        assert raw(d, "GET", "/events/1.000-1/snapshot.jpg?token=s3cret")[0] == 404
    # off loopback, a token is required before anything is served
    r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--config", str(config(tmp_path)), "--host",
                        "0.0.0.0"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "http.token" in r.stderr


# --- in Chromium ---------------------------------------------------------------------------------

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.mark.slow
@needs_chromium
def test_events_page_plays_a_clip(daemon, tmp_path: Path) -> None:
    r = chromium(tmp_path, "--virtual-time-budget=15000", "--dump-dom", daemon.url("/events?play=first"))
    body = re.search(r"<body([^>]*)>", r.stdout)
    assert body, r.stderr[-2000:]
    attrs = dict(re.findall(r'data-([a-z-]+)="([^"]*)"', body.group(1)))
    assert "video-error" not in attrs, attrs
    assert float(attrs.get("playing", "0")) > 0.5, attrs  # the video's time advanced
    assert attrs["clip"] and int(attrs["count"]) >= 3
    assert r.stdout.count('class="item') >= 3 and "front" in r.stdout
    shot = Path(__file__).resolve().parent.parent / "build" / "events-page.png"
    shot.parent.mkdir(exist_ok=True)
    r = chromium(tmp_path, "--window-size=1280,900", "--virtual-time-budget=5000", f"--screenshot={shot}",
                 daemon.url("/events?play=first"))
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (900, 1280), r.stderr[-2000:]
    assert img[100:500].std() > 25  # the clip's frame and the thumbnails, not an empty page


@pytest.mark.slow
@needs_chromium
def test_viewer_draws_zones_with_a_toggle(daemon, tmp_path: Path) -> None:
    on = chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", daemon.url("/")).stdout
    off = chromium(tmp_path, "--virtual-time-budget=3000", "--dump-dom", daemon.url("/?zones=off")).stdout
    assert re.search(r'<polygon[^>]*class="zone"[^>]*data-zone="front"', on), on[-3000:]
    assert 'class="mask"' in on and 'id="zones-toggle"' in on
    svg_tag = lambda dom: re.search(r'<svg id="areas"[^>]*>', dom).group(0)  # noqa: E731
    assert "hidden" not in svg_tag(on) and 'class="hidden"' in svg_tag(off)
    shots = []
    for name, url in (("on", "/"), ("off", "/?zones=off")):
        path = tmp_path / f"viewer-{name}.png"
        chromium(tmp_path, "--window-size=1280,720", "--virtual-time-budget=3000", f"--screenshot={path}",
                 daemon.url(url))
        shots.append(cv2.imread(str(path)))
    # The zone's outline (#5af) over the stream, only with the toggle on.
    def outline(img: np.ndarray) -> int:
        px = img[0:700, 0:925].astype(int)
        b, g, r = px[..., 0], px[..., 1], px[..., 2]
        return int(((b > 200) & (r < 140) & (g > 120) & (g < 210)).sum())
    assert outline(shots[0]) > 1500 and outline(shots[1]) < 300, (outline(shots[0]), outline(shots[1]))
