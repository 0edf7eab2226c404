"""The viewer page in headless Chromium: the stream shows, and the figures are filled in."""

from __future__ import annotations

import shutil
import subprocess

import cv2
import numpy as np
import pytest

from conftest import VTEST
from daemonproc import DaemonProcess

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync", "--hide-scrollbars"]

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (.ci/run installs it)")


def chromium(tmp_path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def daemon():
    with DaemonProcess("run", "--source", str(VTEST), "--loop", "--port", "0") as d:
        d.wait_for(lambda: d.json("/api/detections")["frame"] is not None)
        yield d


def test_screenshot_shows_the_stream(daemon, tmp_path):
    shot = tmp_path / "viewer.png"
    r = chromium(tmp_path, "--window-size=1280,720", "--timeout=4000", f"--screenshot={shot}", daemon.url("/"))
    assert shot.is_file(), r.stderr[-2000:]
    img = cv2.imread(str(shot))
    assert img.shape[:2] == (720, 1280)
    stream = img[20:560, 20:900]
    # Not a blank page: the video's texture, and the hall's grass in quantity.
    assert stream.std() > 30
    hsv = cv2.cvtColor(stream, cv2.COLOR_BGR2HSV)
    green = (hsv[..., 0] > 30) & (hsv[..., 0] < 90) & (hsv[..., 1] > 60) & (hsv[..., 2] > 40)
    assert green.mean() > 0.15
    # The boxes: the annotator's person colour (red) appears in the stream area.
    red = (img[..., 2] > 200) & (img[..., 1] < 80) & (img[..., 0] < 80)
    assert red[20:560, 20:900].sum() > 200


def test_page_fills_in_figures(daemon, tmp_path):
    r = chromium(tmp_path, "--timeout=4000", "--virtual-time-budget=3000", "--dump-dom", daemon.url("/"))
    dom = r.stdout
    assert "camera fps" in dom and "inference ms p50/p95" in dom, r.stderr[-2000:]
    assert "person" in dom.split('id="detections"', 1)[1]
