"""The model catalogue: mirrors first, sha256 checks, cache, and one line when a file is missing."""

from __future__ import annotations

import hashlib
import subprocess
import sys

import pytest

from conftest import DETECTOR, MEDIA, MODELS
from edgedetect.detect.catalogue import Catalogue, Entry, RemoteFile
from edgedetect.errors import UserError


def test_catalogue_names_and_pins():
    cat = Catalogue.load()
    assert set(cat.entries) >= {"ssd-mobilenet-v2-coco", "mobilenet-v2-imagenet", "demo"}
    ssd = cat.get("ssd-mobilenet-v2-coco")
    assert ssd.default and ssd.kind == "detector"
    model = ssd.file("model")
    assert "google-coral/edgetpu/75e675633c2110a991426c8afa64f122b16ac372" in model.url
    assert model.url.endswith("test_data/mobilenet_ssd_v2_coco_quant_postprocess.tflite")
    assert model.sha256 == "7046f31a72ec0045a57b94199144c96cf5840c7dc106b808b64a1ed5559aa0cd"
    assert "google-coral/test_data/104342d2d3480b3e66203073dac24f4e2dbb4c41" in cat.get("mobilenet-v2-imagenet").file("model").url
    assert "opencv/opencv/4.6.0/samples/data/vtest.avi" in cat.get("demo").file("video").url


def test_resolves_from_mirrors(monkeypatch):
    monkeypatch.setenv("EDGEDETECT_MODELS_DIR", f"/nonexistent:{MODELS}:{MEDIA}")
    cat = Catalogue.load()
    for name in ("ssd-mobilenet-v2-coco", "mobilenet-v2-imagenet", "demo"):
        got = cat.resolve(name)
        for role, path in got.paths.items():
            f = got.entry.file(role)
            assert hashlib.sha256(path.read_bytes()).hexdigest() == f.sha256
    assert cat.resolve("ssd-mobilenet-v2-coco").paths["model"] == DETECTOR


def test_models_dir_flag_adds_mirror(monkeypatch):
    monkeypatch.delenv("EDGEDETECT_MODELS_DIR")
    with pytest.raises(UserError, match="not available locally"):
        Catalogue.load().resolve("demo")
    assert Catalogue.load(str(MEDIA)).resolve("demo").paths["video"] == MEDIA / "vtest.avi"


def test_checksum_mismatch_is_refused(tmp_path, monkeypatch):
    (tmp_path / "vtest.avi").write_bytes(b"not the video")
    monkeypatch.setenv("EDGEDETECT_MODELS_DIR", str(tmp_path))
    with pytest.raises(UserError, match=r"vtest.avi: sha256 .* does not match"):
        Catalogue.load().resolve("demo")


def test_pull_without_network_says_how(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEDETECT_MODELS_DIR")
    entry = Entry("x", "detector", "", (RemoteFile("model", "http://127.0.0.1:9/x.tflite", "0" * 64),))
    cat = Catalogue({"x": entry}, [], tmp_path)
    with pytest.raises(UserError) as e:
        cat.pull("x", timeout=2)
    msg = str(e.value)
    assert "cannot download http://127.0.0.1:9/x.tflite" in msg and "EDGEDETECT_MODELS_DIR" in msg
    assert "\n" not in msg and not list(tmp_path.rglob("*.part*"))


def test_pull_uses_cache_copy(tmp_path, monkeypatch):
    monkeypatch.delenv("EDGEDETECT_MODELS_DIR")
    cat = Catalogue({}, [], tmp_path)
    real = Catalogue.load()
    entry = real.get("ssd-mobilenet-v2-coco")
    cat.entries[entry.name] = entry
    for f in entry.files:
        dest = cat.cached_path(entry, f)
        dest.parent.mkdir(parents=True, exist_ok=True)
        dest.write_bytes(((MODELS / ("ssd_mobilenet_v2_coco_quant_postprocess.tflite" if f.role == "model"
                                     else "coco_labels.txt")).read_bytes()))
    got = cat.pull(entry.name, timeout=1)
    assert got.paths["model"].parent == tmp_path / entry.name


def test_models_cli():
    r = subprocess.run([sys.executable, "-m", "edgedetect", "models", "list"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert "ssd-mobilenet-v2-coco" in r.stdout and "local" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgedetect", "models", "info", "mobilenet-v2-imagenet"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert "kind: classifier" in r.stdout and "[1x1001] uint8 scale=0.00390625 zero_point=0" in r.stdout
    r = subprocess.run([sys.executable, "-m", "edgedetect", "models", "pull", "no-such-model"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "unknown model or media 'no-such-model'" in r.stderr


def test_models_info_on_the_demo_video_is_one_line(capsys):
    """`demo` is in the catalogue, but it is a video: one line naming what to ask for instead."""
    from edgedetect.cli import main

    assert main(["models", "info", "demo"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("edgedetect: error: models info demo: 'demo' is a video (")
    assert "not a model; expected one of: ssd-mobilenet-v2-coco, " in err[0]
