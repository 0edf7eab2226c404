"""`edgedetect doctor` on a good and on a deliberately broken set-up: the exact lines."""

from __future__ import annotations

import dataclasses
import grp
import pwd
import socket
from pathlib import Path

import pytest
from conftest import COCO_LABELS, DETECTOR, VTEST

from edgedetect import config, doctor
from edgedetect.cli import main
from edgedetect.config import DetectConfig
from edgedetect.detect.catalogue import Catalogue
from edgedetect.system.sysfs import TEMP_FILE, THROTTLED_FILE

DETECT_KEYS = ", ".join(f.name for f in dataclasses.fields(DetectConfig))
MODEL_NAMES = ", ".join(n for n, e in Catalogue.load().entries.items() if e.kind != "video")


def fake_sysfs(root: Path, temp: str | None = "48312", throttled: str | None = "0x0") -> Path:
    for rel, value in ((TEMP_FILE, temp), (THROTTLED_FILE, throttled)):
        if value is not None:
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(value + "\n")
    return root


def run_doctor(capsys, *args: str) -> tuple[int, dict[str, str]]:
    code = main(["doctor", *args])
    out = capsys.readouterr().out.splitlines()
    lines = {ln.split(":", 1)[0].split()[-1]: ln for ln in out[:-1]}
    return code, lines


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_good_setup_all_ok(tmp_path: Path, capsys) -> None:
    sysfs = fake_sysfs(tmp_path / "sys")
    dev = tmp_path / "dev"
    dev.mkdir()
    (dev / "video0").write_bytes(b"")  # stands in for the device node: exists, readable, writable
    code, lines = run_doctor(capsys, "--source", "0", "--model", str(DETECTOR),
                             "--labels", str(COCO_LABELS), "--sysfs-root", str(sysfs),
                             "--port", str(free_port()), "--dev-root", str(dev))
    assert code == 0, lines
    assert lines["model"] == ("ok   model: ssd_mobilenet_v2_coco_quant_postprocess.tflite: detector (ssd), "
                              "input 300x300, 80 labels")
    assert lines["camera"] == f"ok   camera: {dev}/video0 readable and writable"
    assert lines["temperature"] == "ok   temperature: 48.3 C"
    assert lines["throttling"] == "ok   throttling: 0x0 (none)"
    assert lines["runtime"].startswith("ok   runtime: ai-edge-litert ")


@pytest.fixture
def busy_port():
    """A port some other program is listening on."""
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    yield busy.getsockname()[1]
    busy.close()


def test_broken_setup_reports_each_fault(tmp_path: Path, capsys, busy_port: int) -> None:
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text("[detect]\nthreshhold = 0.4\n")
    empty_sys = tmp_path / "sys"
    empty_sys.mkdir()
    code, lines = run_doctor(capsys, "--config", str(cfg), "--source", "/dev/video9",
                             "--model", str(tmp_path / "missing.tflite"), "--sysfs-root", str(empty_sys),
                             "--port", str(busy_port), "--dev-root", str(tmp_path))
    assert code == 1
    assert lines["config"] == (
        f"FAIL config: {cfg}: [detect]: unknown key 'threshhold' (did you mean 'threshold'?); expected one of: "
        f"{DETECT_KEYS} -> fix the key or value named; 'edgedetect config' "
        "prints every key with its meaning (other checks use the built-in defaults)")
    # Flags are applied by the same config load, so with the file broken the rest use plain defaults.
    assert lines["model"].startswith("ok   model: ssd-mobilenet-v2-coco")


def test_broken_setup_with_valid_config(tmp_path: Path, capsys, busy_port: int) -> None:
    port = busy_port
    empty_sys = tmp_path / "sys"
    empty_sys.mkdir()
    missing = tmp_path / "missing.tflite"
    code, lines = run_doctor(capsys, "--source", "/dev/video9", "--model", str(missing),
                             "--sysfs-root", str(empty_sys), "--port", str(port), "--dev-root", str(tmp_path))
    assert code == 1
    assert lines["model"] == (
        f"FAIL model: {missing}: model file not found (expected a .tflite file or one of: {MODEL_NAMES}) "
        "-> set model.path to an existing .tflite file or a catalogue name "
        "('edgedetect models list')")
    assert lines["camera"] == (f"FAIL camera: /dev/video9: no such device, and no {tmp_path}/video* at all -> plug "
                               "the camera in ('lsusb' lists USB devices; 'dmesg | tail' shows whether its driver loaded)")
    (tmp_path / "video0").write_bytes(b"")
    (tmp_path / "video2").write_bytes(b"")
    assert doctor.check_camera(config.load(None, {"source.uri": "/dev/video9"}), doctor.Env(dev_root=tmp_path)).line() \
        == f"FAIL camera: /dev/video9: no such device -> set source.uri to one of: {tmp_path}/video0, {tmp_path}/video2"
    # Off a Pi the firmware's files do not exist: skipped, not failed.
    not_a_pi = f"not a Raspberry Pi ({empty_sys}/firmware/devicetree/base/model does not name one)"
    assert lines["temperature"] == f"skip temperature: {not_a_pi}"
    assert lines["throttling"] == f"skip throttling: {not_a_pi}"
    # On a Pi they are missing: a fault.
    (empty_sys / "firmware/devicetree/base").mkdir(parents=True)
    (empty_sys / "firmware/devicetree/base/model").write_bytes(b"Raspberry Pi 4 Model B Rev 1.4\0")
    cfg = config.Config()
    cfg.stats.sysfs_root = str(empty_sys)
    temp, thr = doctor.check_sysfs(cfg)
    assert temp.line() == (f"FAIL temperature: {empty_sys}/{TEMP_FILE} missing or unreadable -> check "
                           "stats.sysfs_root (default /sys); figures will lack the temperature")
    assert thr.line().startswith(f"FAIL throttling: {empty_sys}/{THROTTLED_FILE} missing or unreadable -> ")
    assert lines["port"] == (
        f"FAIL port: 127.0.0.1:{port} is in use -> stop the program holding it (sudo ss -ltnp 'sport = :{port}'; "
        "if it is edgedetect, the service is already running) or set http.port")
    assert lines["config"] == "ok   config: defaults valid"


def test_catalogue_model_not_pulled(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("EDGEDETECT_MODELS_DIR", str(tmp_path / "nomirror"))
    code, lines = run_doctor(capsys, "--sysfs-root", str(fake_sysfs(tmp_path / "sys")), "--port", "0",
                             "--source", "demo.mp4")
    assert code == 1
    assert lines["model"].startswith("FAIL model: ssd-mobilenet-v2-coco: mobilenet_ssd_v2_coco_quant_postprocess.tflite "
                                     "is not available locally; ")
    assert lines["model"].endswith("-> edgedetect models pull ssd-mobilenet-v2-coco (as the service: sudo -u "
                                   "edgedetect EDGEDETECT_CACHE_DIR=/var/lib/edgedetect/models edgedetect "
                                   "models pull ssd-mobilenet-v2-coco)")
    assert lines["camera"] == "FAIL camera: demo.mp4: source file not found -> set source.uri to an existing file"


def test_throttling_now_fails_and_past_is_ok(tmp_path: Path) -> None:
    from edgedetect.config import Config

    cfg = Config()
    cfg.stats.sysfs_root = str(fake_sysfs(tmp_path / "a", temp="83000", throttled="0x50005"))
    temp, thr = doctor.check_sysfs(cfg)
    assert temp.line() == "FAIL temperature: 83.0 C -> the SoC throttles from 80 C: add a heatsink or fan"
    assert thr.line() == ("FAIL throttling: 0x50005 (under_voltage, throttled, under_voltage_occurred, "
                          "throttled_occurred) -> use the official 5.1 V 3 A power supply")
    cfg.stats.sysfs_root = str(fake_sysfs(tmp_path / "b", throttled="0x50000"))
    assert doctor.check_sysfs(cfg)[1].line() == "ok   throttling: 0x50000 (under_voltage_occurred, throttled_occurred) since boot"


def test_picam_lists_cameras_with_rpicam_hello(tmp_path: Path) -> None:
    from subprocess import CompletedProcess

    from edgedetect.config import Config

    cfg = Config()
    seen = "Available cameras\n-----------------\n0 : imx708 [4608x2592 10-bit RGGB] (/base/soc/i2c0mux/i2c@1/imx708@1a)\n"
    env = doctor.Env(dev_root=tmp_path, which=lambda n: f"/usr/bin/{n}" if n == "rpicam-hello" else None,
                     run=lambda *a, **k: CompletedProcess(a, 0, seen, ""))
    assert doctor.check_camera(cfg, env).line().startswith("ok   camera: libcamera sees 1: 0 : imx708 [4608x2592")
    env.run = lambda *a, **k: CompletedProcess(a, 0, "", "No cameras available!\n")
    assert doctor.check_camera(cfg, env).line() == (
        "FAIL camera: rpicam-hello --list-cameras: no cameras available -> check the ribbon cable "
        "(contacts towards the HDMI ports on a Pi 4), then reboot")
    env.which = lambda n: None
    assert doctor.check_camera(cfg, env).line().startswith(f"FAIL camera: no {tmp_path}/media* device")


def test_groups_for_a_user_outside_video() -> None:
    try:
        nobody = pwd.getpwnam("nobody")
        grp.getgrnam("video")
    except KeyError:
        pytest.skip("no nobody user or video group on this host")
    check = doctor.check_groups(doctor.Env(uid=nobody.pw_uid))
    assert not check.ok
    assert check.line().startswith("FAIL groups: user nobody is not in video")
    assert "sudo usermod -aG video" in check.line() and check.line().endswith(" nobody, then log in again")


def test_each_camera_is_checked_under_its_name(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(f'[cameras.hall]\nuri = "{VTEST}"\n[cameras.gone]\nuri = "{tmp_path / "missing.mp4"}"\n')
    checks = doctor.check_cameras(config.load(path), doctor.Env(dev_root=tmp_path))
    assert [c.line() for c in checks] == [
        f"ok   camera hall: source '{VTEST}' is a video, not a local camera",
        f"FAIL camera gone: {tmp_path / 'missing.mp4'}: source file not found -> set source.uri to an existing file"]
