"""Open MQTT events end when a file source ends, with the daemon still running: a real short
clip (the first 6 s of vtest.avi, people in every frame), a real mosquitto, the real daemon."""

from __future__ import annotations

import json
import time
from pathlib import Path

import cv2
import pytest

from conftest import VTEST
from daemonproc import DaemonProcess
from mosquitto import MOSQUITTO, Broker, Recorder

pytestmark = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed (apt install mosquitto)")

DEVICE = "pi-end"
EVENTS = f"edgedetect/{DEVICE}/events"


def short_clip(path: Path, frames: int = 60) -> Path:
    cap = cv2.VideoCapture(str(VTEST))
    out = None
    for _ in range(frames):
        ok, img = cap.read()
        assert ok
        if out is None:
            out = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (img.shape[1], img.shape[0]))
        out.write(img)
    cap.release()
    assert out is not None
    out.release()
    return path


@pytest.mark.slow
def test_open_events_end_when_the_file_ends(tmp_path):
    """Before: the events stayed open (count/person > 0, no "end") until the daemon was stopped."""
    clip = short_clip(tmp_path / "clip.avi")
    with Broker(tmp_path / "broker") as broker, Recorder(broker.port) as rec:
        cfg = tmp_path / "edgedetect.toml"
        cfg.write_text(f'[source]\nuri = "{clip}"\nloop = false\n[http]\nport = 0\n'
                       f'[mqtt]\nenabled = true\nhost = "127.0.0.1"\nport = {broker.port}\ndevice = "{DEVICE}"\n'
                       "min_frames = 2\n")
        with DaemonProcess("run", "--config", str(cfg)) as d:
            d.wait_for(lambda: d.json("/api/stats")["source_state"] == "ended", timeout=30)
            started = rec.wait(lambda ms: {json.loads(m.payload)["id"] for m in ms if m.topic == EVENTS
                                           and json.loads(m.payload)["type"] == "start"}, timeout=10)

            def ended(ms):
                ends = {json.loads(m.payload)["id"] for m in ms
                        if m.topic == EVENTS and json.loads(m.payload)["type"] == "end"}
                return started <= ends

            t0 = time.monotonic()
            try:
                rec.wait(ended, timeout=10)
            except AssertionError:
                ends = {json.loads(m.payload)["id"] for m in rec.on(EVENTS) if json.loads(m.payload)["type"] == "end"}
                raise AssertionError(f"{len(started - ends)} of {len(started)} events still open 10 s after "
                                     "the source ended") from None
            took = time.monotonic() - t0
            assert d.proc.poll() is None  # ended by the source's end, not by a shutdown
            count = f"edgedetect/{DEVICE}/count/person"
            rec.wait(lambda ms: [m for m in ms if m.topic == count][-1:] and
                     [m for m in ms if m.topic == count][-1].payload == b"0", timeout=5)
            assert d.json("/api/stats")["mqtt"]["events_ended"] >= len(started)
            assert "Traceback" not in d.output()
        print(f"\n{len(started)} events, all ended {took:.1f} s after the source ended")
