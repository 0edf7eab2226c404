"""Config: TOML validated into dataclasses, one-line errors naming the key, CLI overrides."""

from __future__ import annotations

import subprocess
import sys

import pytest

from edgedetect import config
from edgedetect.errors import ConfigError


def write(tmp_path, text: str):
    p = tmp_path / "edgedetect.toml"
    p.write_text(text)
    return p


def test_defaults_and_file_values(tmp_path):
    cfg = config.load(write(tmp_path, '[detect]\nthreshold = 0.4\nallow = ["person"]\n[http]\nport = 9000\n'))
    assert cfg.detect.threshold == 0.4 and cfg.detect.allow == ["person"]
    assert cfg.http.port == 9000 and cfg.http.host == "127.0.0.1"


def test_cli_overrides_file(tmp_path):
    p = write(tmp_path, "[http]\nport = 9000\n[source]\nuri = \"demo\"\n")
    cfg = config.load(p, {"http.port": 9100, "source.uri": None})
    assert cfg.http.port == 9100 and cfg.source.uri == "demo"


@pytest.mark.parametrize("text, message", [
    ("[detect]\ntreshold = 0.4\n", r"unknown key 'treshold' \(did you mean 'threshold'\?\)"),
    ("[detector]\nthreshold = 0.4\n", r"unknown key 'detector' \(did you mean 'detect'\?\)"),
    ("[http]\nport = \"8080\"\n", r"http.port: expected an integer, got '8080'"),
    ("[http]\nport = 70000\n", r"http.port: expected a value from 0 to 65535, got 70000"),
    ("[detect]\nthreshold = 1.5\n", r"detect.threshold: expected a value from 0 to 1, got 1.5"),
    ("[source]\npace = 1\n", r"source.pace: expected true or false, got 1"),
    ("[detect]\nallow = \"person\"\n", r"detect.allow: expected a list of strings"),
    ("[motion]\nenabled = \"sometimes\"\n", r"motion.enabled: expected one of auto, on, off"),
    ("source = 3\n", r"\[source\] must be a table"),
    ("[http\nport = 1\n", r"invalid TOML"),
    ("[model]\ninput_range = [1.0, -1.0]\n", r"model.input_range: expected \[low, high\]"),
    ("[track]\nmax_lost = 3\n", r"unknown key 'max_lost' \(did you mean 'max_lost_s'\?\)"),
    ("[track]\nmin_hits = 0\n", r"track.min_hits: expected a value from 1 to 1000, got 0"),
    ("[mqtt]\nmin_frames = 0\n", r"mqtt.min_frames \(read as track.min_hits\): expected a value from 1 to 1000"),
    ("[mqtt]\niou = \"high\"\n", r"mqtt.iou \(read as track.iou\): expected a number, got 'high'"),
])
def test_bad_values_name_the_key(tmp_path, text, message):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=message) as e:
        config.load(p)
    assert str(p) in str(e.value) and "\n" not in str(e.value)


def test_old_mqtt_tracking_keys_warn_once_and_still_work(tmp_path, caplog):
    p = write(tmp_path, "[mqtt]\nenabled = false\nmin_frames = 5\nmax_missing = 20\niou = 0.4\n")
    with caplog.at_level("WARNING", logger="edgedetect.config"):
        cfg = config.load(p)
    assert (cfg.track.min_hits, cfg.track.iou, cfg.track.max_lost_s) == (5, 0.4, config.TrackConfig().max_lost_s)
    assert len(caplog.records) == 1
    line = caplog.records[0].getMessage()
    assert str(p) in line and "\n" not in line
    for name in ("min_frames", "max_missing", "track.min_hits", "track.iou", "track.max_lost_s"):
        assert name in line
    caplog.clear()
    # [track] wins over the old key; the warning says the old one is not used
    p = write(tmp_path, "[track]\nmin_hits = 2\n[mqtt]\nmin_frames = 5\n")
    with caplog.at_level("WARNING", logger="edgedetect.config"):
        assert config.load(p).track.min_hits == 2
    assert len(caplog.records) == 1
    assert "min_frames is not used: [track] sets min_hits" in caplog.records[0].getMessage()
    caplog.clear()
    with caplog.at_level("WARNING", logger="edgedetect.config"):
        config.load(write(tmp_path, "[track]\nmin_hits = 4\nmax_lost_s = 1.5\n"))
    assert caplog.records == []


def test_bad_cli_value():
    with pytest.raises(ConfigError, match=r"command line: detect.threshold: expected a value from 0 to 1"):
        config.load(None, {"detect.threshold": 3.0})


def test_missing_and_unreadable(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(tmp_path / "nope.toml")
    with pytest.raises(ConfigError, match="is a directory"):
        config.load(tmp_path)
    binary = tmp_path / "bin.toml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ConfigError, match="not UTF-8"):
        config.load(binary)


def test_printed_config_reads_back(tmp_path):
    cfg = config.load(write(tmp_path, '[detect]\ndeny = ["car", "truck"]\n[http]\ntoken = "a \\"quoted\\" one"\n'))
    text = config.to_toml(cfg)
    again = config.load(write(tmp_path, text))
    assert again == cfg


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgedetect", *args], capture_output=True, text=True, timeout=60)


def test_cli_config_command(tmp_path):
    p = write(tmp_path, "[http]\nport = 9000\n")
    r = run_cli("config", "--config", str(p), "--threshold", "0.3", "--allow", "person,dog")
    assert r.returncode == 0, r.stderr
    assert "port = 9000" in r.stdout and "threshold = 0.3" in r.stdout and 'allow = ["person", "dog"]' in r.stdout


def test_record_flag_turns_the_event_store_on(tmp_path):
    def record_enabled(*args: str) -> str:
        r = run_cli("config", *args)
        assert r.returncode == 0, r.stderr
        section = r.stdout.split("[record]\n", 1)[1]
        return section.split("\n", 1)[0]

    assert record_enabled().startswith("enabled = false")  # off for a plain run
    assert record_enabled("--record").startswith("enabled = true")


def test_cli_config_error_is_one_line_exit_2(tmp_path):
    p = write(tmp_path, "[detect]\nmax_detection = 5\n")
    r = run_cli("run", "--config", str(p))
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown key 'max_detection'" in lines[0] and "Traceback" not in r.stderr


def test_help_shows_values_not_config_keys_and_doctor_only_its_flags(capsys):
    from edgedetect.cli import main

    def help_of(*cmd: str) -> str:
        with pytest.raises(SystemExit):
            main([*cmd, "--help"])
        return capsys.readouterr().out

    run = help_of("run")
    assert "__" not in run and "--source URI" in run and "--model NAME|FILE" in run
    assert "--max-detections N most detections kept per frame (default 20)" in " ".join(run.split())
    doctor = help_of("doctor")
    assert "--source URI" in doctor and "--token-file FILE" in doctor
    for flag in ("--no-pace", "--loop", "--record", "--threshold", "--stats-interval"):
        assert flag in run and flag not in doctor, flag
