"""The model file changed under a running daemon, for real: a copy of the model in a temporary
mirror directory is truncated and overwritten in place while the daemon runs on it. The
interpreter runs from the bytes read once at start (checked against the catalogue's sha256),
so nothing changes: no SIGBUS, the same boxes, /healthz ok. A zip bomb appended to a real YOLO
model as its metadata: one warning, a bounded read, and the model runs with class numbers."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
import struct
import subprocess
import sys
import zipfile

import cv2
import pytest

from conftest import DETECTOR, CLASSIFIER, MEDIA, MODELS, ROOT
from daemonproc import DaemonProcess
from edgedetect.config import ModelConfig
from edgedetect.detect.catalogue import Catalogue
from edgedetect.detect.families import load_model
from edgedetect.detect.metadata import MAX_MEMBERS, MAX_METADATA_BYTES, read_appended
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


@pytest.mark.slow
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


# --- a zip bomb as the model's metadata ----------------------------------------------------------

YOLO_NMS = MODELS / "yolov8n_320_nms_int8.tflite"  # its names are in an appended temp_meta.txt
MB = 1 << 20


def zip_of(members: dict[str, int], lie_size: int | None = None) -> bytes:
    """A zip of members made of that many zero bytes, written 1 MB at a time; with lie_size, the
    headers of its first member declare that size instead of the real one."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for name, size in members.items():
            with z.open(name, "w", force_zip64=False) as f:
                for start in range(0, size, MB):
                    f.write(bytes(min(MB, size - start)))
    data = bytearray(buf.getvalue())
    if lie_size is not None:  # uncompressed size: offset 22 in the local header, 24 in the central one
        struct.pack_into("<I", data, 22, lie_size)
        struct.pack_into("<I", data, data.index(b"PK\x01\x02") + 24, lie_size)
    return bytes(data)


def run_cli_measured(tmp_path, *args: str) -> tuple[int, int, str, str]:
    """(exit code, peak RSS in KB, stdout, stderr) of `edgedetect ARGS`, measured for that child alone."""
    out_path, err_path = tmp_path / "stdout", tmp_path / "stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen([sys.executable, "-m", "edgedetect", *args], cwd=ROOT,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage (ru_maxrss in KB on Linux)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, so Popen must not wait for it
    return proc.returncode, usage.ru_maxrss, out_path.read_text(), err_path.read_text()


def runs_with_class_numbers(model_file, caplog, reason: str) -> None:
    """The loader warns once, naming the file and the limit, and the model finds the dog in
    pets.jpg under its class number, as a model without names does."""
    with caplog.at_level(logging.WARNING, logger="edgedetect.detect"):
        m = load_model(model_file, None, 1)
    warned = [r.getMessage() for r in caplog.records if "metadata" in r.getMessage()]
    assert len(warned) == 1 and str(model_file) in warned[0] and reason in warned[0], warned
    assert m.family == "yolo-nms" and not m.labels
    found = m.run(cv2.imread(str(MEDIA / "pets.jpg"))).detections
    assert "class 16" in [d.label for d in found if d.score >= 0.5], found


@pytest.mark.slow
def test_hundreds_of_zero_megabytes_appended_to_a_yolo_model(tmp_path, caplog):
    """300 members of 1 MB of zeros (a 1.4 MB zip): none is inflated, `models info` stays at the
    clean model's memory and prints one warning line."""
    members = 300
    hostile = tmp_path / "bomb.tflite"
    hostile.write_bytes(YOLO_NMS.read_bytes() + zip_of({f"zeros{i}.txt": MB for i in range(members)}))
    code, clean_kb, out, err = run_cli_measured(tmp_path, "models", "info", str(YOLO_NMS))
    assert code == 0 and "kind: detector (yolo-nms)" in out, err
    code, hostile_kb, out, err = run_cli_measured(tmp_path, "models", "info", str(hostile))
    assert code == 0 and "kind: detector (yolo-nms)" in out and "Traceback" not in err, err
    warned = [ln for ln in err.splitlines() if "metadata" in ln]
    assert len(warned) == 1 and str(hostile) in warned[0] and f"at most {MAX_MEMBERS}" in warned[0], err
    assert hostile_kb < clean_kb + 100 * 1024, (clean_kb, hostile_kb)

    runs_with_class_numbers(hostile, caplog, f"{members} members")
    appended = read_appended(hostile.read_bytes())
    assert appended.members == {} and appended.inflated == 0 and f"{members} members" in appended.refused


@pytest.mark.parametrize("members, lie_size, reason", [
    pytest.param({"metadata.json": 200 * MB}, None, "metadata.json inflates past", id="200MB-metadata.json"),
    pytest.param({"metadata.json": 200 * MB}, 100, "Bad CRC-32", id="declares-100-bytes"),
    pytest.param({"metadata.json": 700 << 10, "labels.txt": 700 << 10}, None, "labels.txt inflates past",
                 id="two-members-of-700KB"),
])
def test_metadata_past_the_budget(tmp_path, caplog, members, lie_size, reason):
    """One budget for all the members read, counted in bytes inflated, whatever their headers say."""
    hostile = tmp_path / "bomb.tflite"
    hostile.write_bytes(YOLO_NMS.read_bytes() + zip_of(members, lie_size))
    runs_with_class_numbers(hostile, caplog, reason)
    appended = read_appended(hostile.read_bytes())
    assert appended.members == {} and reason in appended.refused, appended.refused
    assert appended.inflated <= MAX_METADATA_BYTES + 1
