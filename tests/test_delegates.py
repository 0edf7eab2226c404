"""Accelerators through LiteRT's real external-delegate loading: a no-op delegate library built here
with `cc` (tests/delegate/noop_delegate.c) is dlopened, created with options, asked to Prepare the
graph (it claims no nodes) and destroyed. Also: the one-line errors for a missing library, a
delegate that refuses to start, an Edge TPU model without its delegate; doctor's accelerator
checks on a fake sysfs; the catalogue's Edge TPU variants."""

from __future__ import annotations

import gc
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import pytest

from conftest import COCO_LABELS, DETECTOR, MEDIA, MODELS, VTEST
from daemonproc import DaemonProcess
from edgedetect.cli import main
from edgedetect.config import ModelConfig
from edgedetect.detect import delegates
from edgedetect.detect.catalogue import Catalogue, _parse
from edgedetect.detect.delegates import EDGETPU_LIBRARY, load_delegates, parse_options
from edgedetect.detect.families import load_model
from edgedetect.detect.model import DetectFilter
from edgedetect.detect.resolve import load_configured, resolve_model
from edgedetect.detect.runtime import load_interpreter
from edgedetect.errors import ModelError, UserError

SRC = Path(__file__).parent / "delegate"
YOLO_NMS = MODELS / "yolov8n_320_nms_int8.tflite"
YOLOV5 = MODELS / "yolov5n-int8.tflite"
YOLOV5_EDGETPU = MODELS / "yolov5n-int8_edgetpu.tflite"


def _libedgetpu_present() -> bool:
    import ctypes

    try:
        ctypes.CDLL(EDGETPU_LIBRARY)
        return True
    except OSError:
        return False


NO_LIBEDGETPU = pytest.mark.skipif(_libedgetpu_present(), reason="libedgetpu is installed here")


@pytest.fixture(scope="session")
def noop_delegate(tmp_path_factory) -> Path:
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc) to build the no-op delegate")
    out = tmp_path_factory.mktemp("delegate") / "libnoop_delegate.so"
    subprocess.run([cc, "-shared", "-fPIC", "-O1", "-Wall", "-Wextra", "-Werror", f"-I{SRC}",
                    "-o", str(out), str(SRC / "noop_delegate.c")], check=True, capture_output=True, text=True)
    return out


@pytest.fixture(scope="session")
def not_a_delegate(tmp_path_factory) -> Path:
    """A shared library without the plugin ABI."""
    cc = shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        pytest.skip("no C compiler (cc)")
    d = tmp_path_factory.mktemp("plain")
    (d / "plain.c").write_text("int plain_function(void) { return 1; }\n")
    out = d / "libplain.so"
    subprocess.run([cc, "-shared", "-fPIC", "-o", str(out), str(d / "plain.c")], check=True)
    return out


def events(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def test_model_runs_through_external_delegate_with_options(noop_delegate, tmp_path):
    log = tmp_path / "delegate.log"
    ds = load_delegates(str(noop_delegate), [f"log={log}", "speed=fast", "device = usb:0"])
    assert events(log) == [f"option log={log}", "option speed=fast", "option device=usb:0", "create"]
    model = load_model(YOLO_NMS, None, 1, delegates=ds)
    assert events(log)[-1] == "prepare"  # the runtime handed the graph to the delegate
    img = cv2.imread(str(MEDIA / "pets.jpg"))
    through = model.run(img, DetectFilter()).detections
    cpu = load_model(YOLO_NMS, None, 1).run(img, DetectFilter()).detections
    assert [d.label for d in through] == ["dog", "dog"] and through == cpu  # it claimed no nodes: CPU results
    del ds, model
    gc.collect()
    assert events(log)[-1] == "destroy"  # released with the interpreter


def test_delegate_from_model_config(noop_delegate, tmp_path):
    log = tmp_path / "config.log"
    mc = ModelConfig(path=str(DETECTOR), labels=str(COCO_LABELS), delegate=str(noop_delegate),
                     delegate_options=[f"log={log}", "threads=1"])
    files = resolve_model(mc, Catalogue.load())
    model = load_configured(mc, files, threads=1)
    assert "option threads=1" in events(log) and "prepare" in events(log)
    dets = model.run(cv2.imread(str(MEDIA / "grace_hopper.bmp")), DetectFilter()).detections
    assert dets and dets[0].label == "person"


def test_delegate_refusing_to_start_one_line(noop_delegate):
    with pytest.raises(ModelError) as e:
        load_delegates(str(noop_delegate), ["fail=no accelerator on this bus"])
    msg = str(e.value)
    assert "\n" not in msg and "the delegate did not start (no accelerator on this bus)" in msg


def test_missing_delegate_library_one_line(tmp_path):
    missing = tmp_path / "libmissing.so"
    with pytest.raises(ModelError) as e:
        load_delegates(str(missing))
    assert "\n" not in str(e.value) and f"{missing}: delegate library not found" in str(e.value)
    with pytest.raises(ModelError, match=r"libnothing_here\.so: cannot open shared object file"):
        load_delegates("libnothing_here.so")


def test_not_a_delegate_library(not_a_delegate):
    with pytest.raises(ModelError, match="not a TFLite external delegate .no tflite_plugin_create_delegate"):
        load_delegates(str(not_a_delegate))


@NO_LIBEDGETPU
def test_edgetpu_without_libedgetpu_says_how_to_install():
    with pytest.raises(ModelError) as e:
        load_delegates("edgetpu", ["device=usb"])
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith('model.delegate = "edgetpu": libedgetpu.so.1 not found')
    assert "sudo apt install libedgetpu1-std" in msg and "coral.ai" in msg


@pytest.mark.parametrize("options, expected", [
    (["device=usb:0", "x"], "'x' is not key=value"),
    (["device=firewire"], "device='firewire'; expected usb, usb:N, pci or pci:N"),
])
def test_bad_delegate_options(options, expected):
    with pytest.raises(ModelError, match=expected.replace("(", r"\(").replace(")", r"\)")):
        load_delegates("edgetpu", options)


def test_options_without_delegate_are_an_error():
    assert load_delegates("", []) == []
    with pytest.raises(ModelError, match="delegate_options are set but model.delegate is empty"):
        load_delegates("", ["device=usb"])
    assert parse_options(["a=1", "b = two=2"]) == {"a": "1", "b": "two=2"}


def test_edgetpu_model_needs_its_delegate():
    with pytest.raises(ModelError) as e:
        load_model(YOLOV5_EDGETPU, None, 1)
    msg = str(e.value)
    assert "\n" not in msg and "compiled for the Coral Edge TPU" in msg and "edgetpu-custom-op" in msg
    assert delegates.EDGETPU_OP in delegates.custom_ops(YOLOV5_EDGETPU.read_bytes())
    assert delegates.custom_ops(YOLOV5.read_bytes()) == set()


def test_models_info_on_an_edgetpu_model_one_line():
    """The check sits in the one function that makes interpreters, so every tool says the same."""
    with pytest.raises(ModelError, match="compiled for the Coral Edge TPU"):
        load_interpreter(YOLOV5_EDGETPU, 1)
    r = subprocess.run([sys.executable, "-m", "edgedetect", "models", "info", str(YOLOV5_EDGETPU)],
                       capture_output=True, text=True, timeout=120)
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2 and len(errors) == 1 and "edgetpu-custom-op" in errors[0], r.stderr
    assert "truncated" not in r.stderr and "Traceback" not in r.stderr


def run_cli(tmp_path: Path, config: str, *args: str) -> subprocess.CompletedProcess:
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text(config)
    return subprocess.run([sys.executable, "-m", "edgedetect", "run", "--config", str(cfg), "--source", str(VTEST),
                           "--port", "0", *args], capture_output=True, text=True, timeout=120)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    errors = [ln for ln in r.stderr.splitlines() if "error:" in ln]
    assert r.returncode == 2, r.stderr
    assert len(errors) == 1, r.stderr
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
    return errors[0]


def test_run_with_missing_delegate_library_exits_2(tmp_path):
    line = one_error_line(run_cli(tmp_path, f'[model]\npath = "{YOLO_NMS}"\ndelegate = "{tmp_path}/libgone.so"\n'))
    assert "libgone.so: delegate library not found" in line


@NO_LIBEDGETPU
def test_run_edgetpu_without_runtime_exits_2(tmp_path):
    line = one_error_line(run_cli(tmp_path, f'[model]\npath = "{YOLOV5_EDGETPU}"\ndelegate = "edgetpu"\n'
                                            'delegate_options = ["device=usb"]\n'))
    assert "libedgetpu.so.1 not found" in line and "libedgetpu1-std" in line


def test_run_through_noop_delegate(noop_delegate, tmp_path):
    """The daemon itself with an external delegate: it starts, detects, stops cleanly, and the
    delegate is prepared and destroyed."""
    log = tmp_path / "run.log"
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text(f'[model]\npath = "{YOLO_NMS}"\ndelegate = "{noop_delegate}"\n'
                   f'delegate_options = ["log={log}"]\n')
    with DaemonProcess("run", "--config", str(cfg), "--source", str(VTEST), "--loop", "--port", "0") as d:
        found = d.wait_for(lambda: [x["label"] for x in d.json("/api/detections")["detections"]])
        assert "person" in found
        code, _ = d.terminate()
    assert code == 0, d.output()
    assert "Traceback" not in d.output()
    assert "prepare" in events(log) and events(log)[-1] == "destroy", events(log)


# --- doctor ---------------------------------------------------------------------------------------

def fake_coral(sysfs: Path, ids: tuple[str, str] = ("18d1", "9302"), speed: str = "5000") -> Path:
    dev = sysfs / "bus" / "usb" / "devices" / "2-1"
    dev.mkdir(parents=True, exist_ok=True)
    (dev / "idVendor").write_text(ids[0] + "\n")
    (dev / "idProduct").write_text(ids[1] + "\n")
    (dev / "speed").write_text(speed + "\n")
    other = sysfs / "bus" / "usb" / "devices" / "1-1"  # a keyboard, say
    other.mkdir(parents=True, exist_ok=True)
    (other / "idVendor").write_text("046d\n")
    (other / "idProduct").write_text("c31c\n")
    return sysfs


def doctor_lines(capsys, tmp_path: Path, model_section: str, sysfs: Path) -> dict[str, str]:
    cfg = tmp_path / "doctor.toml"
    cfg.write_text(f'[model]\npath = "{YOLO_NMS}"\n{model_section}[http]\nport = 0\n')
    main(["doctor", "--config", str(cfg), "--sysfs-root", str(sysfs), "--dev-root", str(tmp_path)])
    out = capsys.readouterr().out.splitlines()
    return {ln.split(":", 1)[0].split()[-1]: ln for ln in out[:-1]}


@NO_LIBEDGETPU
def test_doctor_edgetpu_missing_library_and_usb2(capsys, tmp_path):
    sysfs = fake_coral(tmp_path / "sys", speed="480")
    lines = doctor_lines(capsys, tmp_path, 'delegate = "edgetpu"\n', sysfs)
    assert lines["accelerator"].startswith("FAIL accelerator: libedgetpu.so.1 not found")
    assert "sudo apt install libedgetpu1-std" in lines["accelerator"]
    assert lines["coral"].startswith("FAIL coral: Coral USB Accelerator on a USB 2 port (2-1, 480 Mbit/s)")
    assert "blue USB 3" in lines["coral"]


def test_doctor_coral_on_usb3(capsys, tmp_path):
    sysfs = fake_coral(tmp_path / "sys", ids=("1a6e", "089a"), speed="5000")
    lines = doctor_lines(capsys, tmp_path, 'delegate = "edgetpu"\n', sysfs)
    assert lines["coral"] == ("ok   coral: Coral USB Accelerator (before its firmware is loaded) at 2-1, "
                              "5000 Mbit/s")


def test_doctor_no_coral(capsys, tmp_path):
    lines = doctor_lines(capsys, tmp_path, 'delegate = "edgetpu"\ndelegate_options = ["device=usb"]\n',
                         tmp_path / "empty-sys")
    assert lines["coral"].startswith("FAIL coral: no Coral USB Accelerator found (USB ids 1a6e:089a or 18d1:9302)")


def test_doctor_cpu_mentions_a_plugged_coral(capsys, tmp_path):
    lines = doctor_lines(capsys, tmp_path, "", fake_coral(tmp_path / "sys"))
    assert lines["accelerator"].startswith("ok   accelerator: none configured (CPU); a Coral USB Accelerator is "
                                           "plugged in")
    assert "coral" not in lines
    assert lines["model"].startswith("ok   model: yolov8n_320_nms_int8.tflite: detector (yolo-nms), input 320x320, "
                                     "80 labels")


def test_doctor_external_delegate_loads(capsys, tmp_path, noop_delegate):
    lines = doctor_lines(capsys, tmp_path, f'delegate = "{noop_delegate}"\n', tmp_path / "sys")
    assert lines["accelerator"] == f"ok   accelerator: {noop_delegate} loads"
    assert lines["model"].startswith("ok   model:")


# --- catalogue: Edge TPU variants -------------------------------------------------------------------

def test_catalogue_names_the_edgetpu_variant():
    cat = Catalogue.load()
    base, tpu = cat.get("yolov5n-coco"), cat.get("yolov5n-coco-edgetpu")
    assert base.variants == {"edgetpu": "yolov5n-coco-edgetpu"} and tpu.delegate == "edgetpu"
    cpu_files = resolve_model(ModelConfig(path="yolov5n-coco"), cat, download=False)
    tpu_files = resolve_model(ModelConfig(path="yolov5n-coco", delegate="edgetpu"), cat, download=False)
    assert cpu_files.model.name == "yolov5n-int8.tflite"  # found in ../shared by the URL's name, sha256 checked
    assert tpu_files.model.name == "yolov5n-int8_edgetpu.tflite" and tpu_files.name == "yolov5n-coco-edgetpu"
    # Chosen without its delegate, the Edge TPU build stops with the one line.
    with pytest.raises(ModelError, match="compiled for the Coral Edge TPU"):
        load_configured(ModelConfig(path="yolov5n-coco-edgetpu"),
                        resolve_model(ModelConfig(path="yolov5n-coco-edgetpu"), cat, download=False), threads=1)


def test_catalogue_rejects_a_variant_that_is_not_one():
    entry = {"model": {"url": "https://example.invalid/a.tflite", "sha256": "0" * 64}}
    with pytest.raises(UserError, match="names 'b' as its edgetpu variant"):
        _parse({"a": {**entry, "variants": {"edgetpu": "b"}}, "b": entry}, "test.toml")
