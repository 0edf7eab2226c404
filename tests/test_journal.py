"""Journal logging: the fields handed to systemd.journal.send, the choice between journal and
stderr, and the <N> priority prefixes journald parses on the stderr path."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

NO_SYSTEMD = str(Path(__file__).resolve().parent / "_nosystemd")

from edgedetect.system import journal

from edgedetect.system import logs
from edgedetect.pipeline.report import LogSink

SNAP = {
    "uptime_s": 12.0, "source_state": "running", "inference_fps": 9.8, "camera_fps": 10.0,
    "inference_ms": {"mean": 30.1, "p50": 29.5, "p95": 41.0}, "cpu_percent": {"process": 80.0, "system": 60.0},
    "temperature_c": 58.4, "throttled": "0x50000", "throttled_flags": ["under_voltage_occurred", "throttled_occurred"],
}


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []

    def __call__(self, message: str, **fields: str) -> None:
        self.calls.append((message, fields))


@pytest.fixture
def journal_logger():
    rec = Recorder()
    logger = logging.getLogger("edgedetect.pipeline.stats")
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    root.handlers = [journal.JournalHandler(rec)]
    root.setLevel(logging.INFO)
    yield rec, logger
    root.handlers, root.level = saved_handlers, saved_level


def test_stats_line_carries_figures_as_fields(journal_logger) -> None:
    rec, _ = journal_logger
    LogSink()(SNAP)
    message, f = rec.calls[-1]
    assert message == "9.8 fps, inference 30 ms (p95 41), cpu 80% (system 60%), 58.4 C, " \
                      "throttled=0x50000 (under_voltage_occurred,throttled_occurred)"
    assert f["PRIORITY"] == "6" and f["SYSLOG_IDENTIFIER"] == "edgedetect" and f["LOGGER"] == "edgedetect.pipeline.stats"
    assert f["EDGEDETECT_FPS"] == "9.8"
    assert f["EDGEDETECT_INFERENCE_MS"] == "29.5"
    assert f["EDGEDETECT_CPU_TEMP"] == "58.4"
    assert f["EDGEDETECT_INFERENCE_MS_P95"] == "41.0"
    assert f["EDGEDETECT_CPU_PERCENT_PROCESS"] == "80.0"
    assert f["EDGEDETECT_THROTTLED_FLAGS"] == "under_voltage_occurred,throttled_occurred"
    assert f["EDGEDETECT_SOURCE_STATE"] == "running"
    assert all(k.isupper() and len(k) <= 64 and not k.startswith("_") for k in f if k.startswith("EDGE"))


def test_priorities_and_exceptions(journal_logger) -> None:
    rec, logger = journal_logger
    logger.warning("camera slow")
    logger.error("inference failed")
    logger.critical("giving up")
    try:
        raise ValueError("bad tensor")
    except ValueError:
        logger.exception("boom")
    prios = [f["PRIORITY"] for _, f in rec.calls]
    assert prios == ["4", "3", "2", "3"]
    assert "EDGEDETECT_FPS" not in rec.calls[0][1]  # plain messages carry no figures
    assert rec.calls[-1][1]["EXCEPTION"] == "ValueError: bad tensor"
    assert "Traceback" in rec.calls[-1][0]


def test_a_failing_journal_never_raises(journal_logger, capsys) -> None:
    def broken(message: str, **fields: str) -> None:
        raise OSError("journal socket gone")

    logging.getLogger().handlers = [journal.JournalHandler(broken)]
    logging.getLogger("edgedetect").warning("still running")  # must not raise


def test_journal_stream_must_match_stderr(tmp_path) -> None:
    with tempfile.TemporaryFile() as f:
        st = os.fstat(f.fileno())
        assert journal.stderr_is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not journal.stderr_is_journal(f, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not journal.stderr_is_journal(f, {})
        root = logging.Logger("test-root")
        root.addHandler(logging.NullHandler())
        rec = Recorder()
        env = {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        assert journal.install_journal_handler(root, f, env, send=rec)
        assert [type(h) for h in root.handlers] == [journal.JournalHandler]
        other = logging.Logger("test-root-2")
        assert not journal.install_journal_handler(other, f, {}, send=rec)  # stderr is a terminal or pipe


def _run_logging(env: dict[str, str], code: str) -> subprocess.CompletedProcess[str]:
    script = ("import logging, os, sys\n"
              "st = os.fstat(2)\n"
              "if os.environ.get('MATCH'): os.environ['JOURNAL_STREAM'] = f'{st.st_dev}:{st.st_ino}'\n"
              "from edgedetect.system.logs import setup_logging\n"
              "setup_logging()\n" + code)
    return subprocess.run([sys.executable, "-c", script], env={**os.environ, **env}, text=True,
                          capture_output=True, timeout=30)


def test_stderr_lines_get_priority_prefix_only_under_systemd() -> None:
    code = "logging.getLogger('edgedetect').warning('hot: %s', 81)\nlogging.getLogger('edgedetect').info('ok')\n"
    # JOURNAL_STREAM matches stderr, but systemd.journal is hidden: the stderr path with <N>.
    hidden = _run_logging({"MATCH": "1", "PYTHONPATH": os.pathsep.join([NO_SYSTEMD, *sys.path])}, code)
    assert hidden.stderr.splitlines() == ["<4>WARNING edgedetect: hot: 81", "<6>INFO edgedetect: ok"]
    plain = _run_logging({"JOURNAL_STREAM": ""}, code)
    assert plain.stderr.splitlines() == ["WARNING edgedetect: hot: 81", "INFO edgedetect: ok"]


def test_priority_mapping() -> None:
    assert [journal.priority(lvl) for lvl in (5, 10, 20, 25, 30, 40, 50)] == [7, 7, 6, 6, 4, 3, 2]
    f = logs.PriorityFormatter("%(message)s")
    rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "a\nb", None, None)
    assert f.format(rec) == "<3>a\n<3>b"


def test_journal_handler_chosen_under_systemd_when_python_systemd_is_installed() -> None:
    pytest.importorskip("systemd.journal", reason="systemd-python not installed (the 'journal' extra)")
    # Only which handler is installed is checked: no journald runs on this host to receive entries.
    code = "print([type(h).__name__ for h in logging.getLogger().handlers])\n"
    assert _run_logging({"MATCH": "1"}, code).stdout.strip() == "['JournalHandler']"
    assert _run_logging({"JOURNAL_STREAM": ""}, code).stdout.strip() == "['StreamHandler']"
