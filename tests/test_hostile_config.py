"""Hostile config values, given for real (a TOML file, the command line, a running daemon):
nan and inf, a byte-order mark, names over 255 bytes, overlong values. Each ends in one line
that names the file, the key and the value, never a traceback."""

from __future__ import annotations

import dataclasses
import re
import subprocess
import sys
import time
import typing

import pytest

from conftest import ROOT, VTEST
from edgedetect import config
from edgedetect.errors import ConfigError


def write(tmp_path, text: str, name: str = "edgedetect.toml"):
    p = tmp_path / name
    p.write_text(text)
    return p


def run_cli(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgedetect", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def one_error_line(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 2, (r.returncode, r.stderr[-2000:])
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def float_keys() -> list[str]:
    """Every number key of every [section], so that a key added later is covered too."""
    keys = []
    for sf in dataclasses.fields(config.Config):
        cls = typing.get_type_hints(config.Config)[sf.name]
        if not dataclasses.is_dataclass(cls):
            continue
        hints = typing.get_type_hints(cls)
        keys += [f"{sf.name}.{f.name}" for f in dataclasses.fields(cls) if hints[f.name] is float]
    return keys


# --- item 4: nan and inf ------------------------------------------------------------------------

@pytest.mark.parametrize("literal", ["nan", "+nan", "-nan", "inf", "-inf"])
@pytest.mark.parametrize("dotted", float_keys())
def test_non_finite_numbers_refused_in_the_file(tmp_path, dotted, literal):
    section, key = dotted.split(".")
    p = write(tmp_path, f"[{section}]\n{key} = {literal}\n")
    with pytest.raises(ConfigError) as e:
        config.load(p)
    msg = str(e.value)
    assert msg.startswith(f"{p}: {dotted}: expected a finite number, got ") and "\n" not in msg, msg


def test_every_float_key_is_covered():
    keys = float_keys()
    for k in ("detect.threshold", "stats.interval", "http.client_timeout", "pipeline.stall_timeout", "source.fps"):
        assert k in keys


@pytest.mark.parametrize("text, where", [
    ("[model]\ninput_range = [nan, 1.0]\n", "model.input_range[0]"),
    ("[model]\ninput_range = [-1.0, inf]\n", "model.input_range[1]"),
    # an integer too large for a float is infinite too, not an OverflowError traceback
    ("[stats]\ninterval = 1" + "0" * 400 + "\n", "stats.interval"),
])
def test_non_finite_in_lists_and_overflow(tmp_path, text, where):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(f"{where}: expected a finite number")):
        config.load(p)


@pytest.mark.parametrize("flag, value, key", [
    ("--threshold", "nan", "detect.threshold"),
    ("--stats-interval", "nan", "stats.interval"),
    ("--stats-interval", "inf", "stats.interval"),
    ("--threshold", "-inf", "detect.threshold"),
])
def test_non_finite_on_the_command_line(flag, value, key):
    line = one_error_line(run_cli("config", f"{flag}={value}"))
    assert f"command line: {key}: expected a finite number, got" in line, line


def test_finite_values_still_pass(tmp_path):
    p = write(tmp_path, "[stats]\ninterval = 0.5\n[detect]\nthreshold = 1\n[http]\nclient_timeout = 600\n")
    cfg = config.load(p)
    assert cfg.stats.interval == 0.5 and cfg.detect.threshold == 1.0 and cfg.http.client_timeout == 600.0


@pytest.mark.parametrize("text, key", [
    ("[stats]\ninterval = nan\n", "stats.interval"),  # before: 14,000 stats lines in 5 s
    ("[http]\nclient_timeout = nan\n", "http.client_timeout"),  # before: every request a traceback
    ("[detect]\nthreshold = nan\n", "detect.threshold"),  # before: no detections, no error
])
def test_daemon_refuses_nan_at_start(tmp_path, text, key):
    """The real daemon, not just the loader: it stops at once with one line instead of running
    with the value (the stats thread then wrote a line per loop, without pause)."""
    p = write(tmp_path, text)
    t0 = time.monotonic()
    try:
        r = run_cli("run", "--config", str(p), "--source", str(VTEST), "--port", "0", timeout=30)
    except subprocess.TimeoutExpired as e:
        out = (e.stderr or b"").decode(errors="replace") if isinstance(e.stderr, bytes) else (e.stderr or "")
        raise AssertionError(f"the daemon ran with {key} = nan: {len(out.splitlines())} lines in 30 s") from None
    line = one_error_line(r)
    assert f"{p}: {key}: expected a finite number, got nan" in line
    assert time.monotonic() - t0 < 20


# --- item 10: byte-order mark, names over 255 bytes, overlong values ----------------------------

def test_byte_order_mark_is_read_past(tmp_path):
    """Before: `invalid TOML (Invalid statement (at line 1, column 1))` for a file that looks right."""
    p = tmp_path / "edgedetect.toml"
    p.write_bytes(b"\xef\xbb\xbf[detect]\r\nthreshold = 0.35\r\n")
    assert config.load(p).detect.threshold == 0.35
    r = run_cli("config", "--config", str(p))
    assert r.returncode == 0 and "threshold = 0.35" in r.stdout, r.stderr


LONG = "n" * 300  # one path component over the 255 bytes a Linux file name may have


@pytest.mark.parametrize("args", [
    ["config", "--config", "{tmp}/" + LONG + "/edgedetect.toml"],
    ["config", "--config", "{tmp}/" + LONG + ".toml"],
    ["run", "--port", "0", "--model", "{tmp}/" + LONG + ".tflite"],
    ["run", "--port", "0", "--labels", "{tmp}/" + LONG + ".txt"],
    ["run", "--port", "0", "--source", "{tmp}/" + LONG + ".mp4"],
])
def test_name_over_255_bytes_is_one_line(tmp_path, args):
    """Before: `--config` and `--model` with such a name ended in an OSError traceback."""
    r = run_cli(*[a.format(tmp=tmp_path) for a in args])
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr[-3000:]
    errors = [ln for ln in r.stderr.splitlines() if ln.startswith("edgedetect: error:")]
    assert len(errors) == 1, r.stderr
    line = errors[0]
    assert "too long" in line.lower(), line
    assert LONG not in line and len(line) < 500, line  # the value is cut, not printed whole


def test_overlong_value_is_cut_in_the_error_line(tmp_path):
    blob = "x" * 5000
    p = write(tmp_path, f'[motion]\nenabled = "{blob}"\n')
    r = run_cli("run", "--config", str(p))
    line = one_error_line(r)
    assert "motion.enabled: expected one of auto, on, off" in line and blob not in line
    assert len(line) < 600, len(line)
