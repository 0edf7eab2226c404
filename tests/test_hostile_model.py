"""The model file changed under a running daemon, for real: a copy of the model in a temporary
mirror directory is truncated and overwritten in place while the daemon runs on it. The
interpreter runs from the bytes read once at start (checked against the catalogue's sha256),
so nothing changes: no SIGBUS, the same boxes, /healthz ok."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys

import pytest

from conftest import DETECTOR, CLASSIFIER, MEDIA, ROOT
from daemonproc import DaemonProcess
from edgedetect.config import ModelConfig
from edgedetect.detect.catalogue import Catalogue
from edgedetect.detect.resolve import load_configured, resolve_model
from edgedetect.errors import ModelError

IMAGE = MEDIA / "kite_and_cold.jpg"
NAME = "ssd-mobilenet-v2-coco"


@pytest.fixture
def mirror(tmp_path):
    """A mirror directory with its own copy of the detector (the catalogue finds it there first)."""
    d = tmp_path / "models"
    d.mkdir()
    shutil.copy(DETECTOR, d / DETECTOR.name)
    shutil.copy(DETECTOR.with_name("coco_labels.txt"), d / "coco_labels.txt")
    return d


def boxes(d: DaemonProcess) -> tuple[int, list[tuple[str, float, tuple[int, ...]]]]:
    det = d.json("/api/detections")
    return det["frame"], [(x["label"], x["score"], tuple(x["box"])) for x in det["detections"]]


def frames_inferred(d: DaemonProcess) -> int:
    return d.json("/api/stats")["frames_inferred"]


def run_on(mirror) -> DaemonProcess:
    return DaemonProcess("run", "--models-dir", str(mirror), "--model", NAME, "--source", str(IMAGE), "--loop",
                         "--no-pace", "--port", "0", "--threads", "1")


def assert_unchanged(d: DaemonProcess, reference, more: int = 20) -> None:
    start = frames_inferred(d)
    d.wait_for(lambda: frames_inferred(d) >= start + more, timeout=30)
    for _ in range(5):
        frame, found = boxes(d)
        assert frame is not None and found == reference, (found, reference)
    assert d.get("/healthz")[0] == 200
    assert d.proc.poll() is None


def test_model_file_truncated_then_overwritten_under_the_daemon(mirror):
    """Before (the runtime memory-mapped the file): truncating it killed the daemon with SIGBUS
    and no log line; overwriting it in place gave garbage boxes while /healthz stayed ok."""
    model = mirror / DETECTOR.name
    size = model.stat().st_size
    with run_on(mirror) as d:
        d.wait_for(lambda: boxes(d)[1], timeout=30)
        reference = boxes(d)[1]
        assert any(label == "kite" for label, _, _ in reference) and any(lb == "person" for lb, _, _ in reference)
        assert boxes(d)[1] == reference  # a still image gives the same boxes every frame

        with model.open("r+b") as f:  # cut to a third, then to nothing
            f.truncate(size // 3)
        assert_unchanged(d, reference)
        with model.open("r+b") as f:
            f.truncate(0)
        assert_unchanged(d, reference)

        # the same inode rewritten with other bytes: the weights' pages would change under a mapping
        garbage = bytes((i * 131 + 7) % 251 for i in range(size))
        with model.open("r+b") as f:
            f.write(garbage)
            f.flush()
            os.fsync(f.fileno())
        assert model.stat().st_size == size
        assert_unchanged(d, reference)

        out = d.output()
        assert "Traceback" not in out and "ERROR" not in out
        code, _ = d.terminate()
        assert code == 0  # not -7 (SIGBUS)

    # A restart on the damaged file stops at once with one line: the catalogue's checksum.
    r = subprocess.run([sys.executable, "-m", "edgedetect", "run", "--models-dir", str(mirror), "--model", NAME,
                        "--source", str(IMAGE), "--port", "0"], capture_output=True, text=True, timeout=60, cwd=ROOT)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgedetect: error:")]
    assert len(errors) == 1 and "does not match the catalogue's 7046f31a72ec" in errors[0], r.stderr


def test_bytes_loaded_are_checked_against_the_pin(mirror):
    """The catalogue checks the file when it finds it; the file is rewritten after that check and
    before the model is read. The bytes that would run are checked too: one line, no model."""
    cat = Catalogue.load(str(mirror))
    mc = ModelConfig(path=NAME, threads=1)
    files = resolve_model(mc, cat, download=False)
    assert files.model == mirror / DETECTOR.name
    assert files.sha256 == hashlib.sha256(DETECTOR.read_bytes()).hexdigest()
    data = bytearray(files.model.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one bit pattern of one weight: loads fine, runs wrong
    files.model.write_bytes(bytes(data))
    with pytest.raises(ModelError) as e:
        load_configured(mc, files)
    msg = str(e.value)
    assert "\n" not in msg and "sha256" in msg and "catalogue's 7046f31a72ec" in msg and NAME in msg, msg
    # unchanged, it loads
    shutil.copy(DETECTOR, files.model)
    assert load_configured(mc, files).kind == "detector"


def test_a_path_named_like_a_catalogue_file(tmp_path, caplog):
    """A path, not a catalogue name: the user's own model may share the file name. The same
    bytes load silently; other bytes load with one warning line naming both checksums."""
    cat = Catalogue.load(str(tmp_path / "empty"))
    same = tmp_path / "a" / DETECTOR.name
    same.parent.mkdir()
    shutil.copy(DETECTOR, same)
    other = tmp_path / "b" / DETECTOR.name
    other.parent.mkdir()
    shutil.copy(CLASSIFIER, other)
    with caplog.at_level(logging.WARNING, logger="edgedetect.detect"):
        load_configured(ModelConfig(path=str(same), threads=1), resolve_model(ModelConfig(path=str(same)), cat))
        assert not [r for r in caplog.records if "sha256" in r.getMessage()]
        m = load_configured(ModelConfig(path=str(other), threads=1), resolve_model(ModelConfig(path=str(other)), cat))
    assert m.kind == "classifier"
    warned = [r.getMessage() for r in caplog.records if "sha256" in r.getMessage()]
    assert len(warned) == 1 and "7046f31a72ec" in warned[0] and "\n" not in warned[0], warned
