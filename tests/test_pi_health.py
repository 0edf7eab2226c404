"""The Pi's own health from fake sysfs and procfs trees: throttling and under-voltage logged on
change only (one WARNING when a flag appears, one INFO when it clears), CMA in the figures with
a warning while the camera runs short of it, and doctor's 64-bit, CMA and storage checks."""

from __future__ import annotations

import logging
import os
import re
import time
from pathlib import Path

import pytest

from conftest import VTEST
from daemonproc import DaemonProcess
from edgedetect import doctor
from edgedetect.cli import build_parser
from edgedetect.pipeline.report import LogSink, StatsReporter
from edgedetect.pipeline.state import SourceState
from edgedetect.pipeline.stats import CameraStats, DetectorStats, Figures
from edgedetect.system.procfs import MEMINFO_FILE
from edgedetect.system.sysfs import TEMP_FILE, THROTTLED_FILE

HEALTH = "edgedetect.system.health"


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    tmp = p.with_suffix(".tmp")
    tmp.write_text(text)
    tmp.replace(p)  # whole, as the kernel serves it: a reader never sees half a file


def sysfs(root: Path, throttled: str = "0x0", temp: str = "52000") -> Path:
    write(root, TEMP_FILE, temp + "\n")
    write(root, THROTTLED_FILE, throttled + "\n")
    return root


def meminfo(root: Path, cma_total_kb: int | None = 524288, cma_free_kb: int = 400000) -> Path:
    lines = ["MemTotal:        3884376 kB", "MemFree:         2215412 kB", "MemAvailable:    3105316 kB"]
    if cma_total_kb is not None:
        lines += [f"CmaTotal:         {cma_total_kb} kB", f"CmaFree:          {cma_free_kb} kB"]
    lines += ["HugePages_Total:       0", "Hugepagesize:       2048 kB"]
    write(root, MEMINFO_FILE, "\n".join(lines) + "\n")
    return root


def pipeline_figures(sysfs_root: Path, procfs_root: Path) -> Figures:
    """The figures of a one-camera pipeline reading these sysfs and procfs trees."""
    return Figures(DetectorStats(sysfs_root=str(sysfs_root), procfs_root=str(procfs_root)), [CameraStats("camera")])


def health_records(caplog) -> list[tuple[str, str]]:
    return [(r.levelname, r.getMessage()) for r in caplog.records if r.name == HEALTH]


def test_throttling_logged_once_when_it_starts_and_once_when_it_ends(tmp_path, caplog):
    """Driven by the real stats reporter at 20 lines a second; the word changes twice."""
    root = sysfs(tmp_path / "sys")
    stats = pipeline_figures(root, meminfo(tmp_path / "proc"))
    lines: list[dict] = []
    reporter = StatsReporter(stats, 0.05, [LogSink(), lines.append])

    def after_lines(n: int) -> None:
        target = len(lines) + n
        deadline = time.monotonic() + 10
        while len(lines) < target:
            assert time.monotonic() < deadline, "stats lines stopped"
            time.sleep(0.01)

    with caplog.at_level(logging.INFO):
        reporter.start()
        after_lines(5)
        write(root, THROTTLED_FILE, "0x50005\n")  # under-voltage and throttled now (and since boot)
        after_lines(10)
        write(root, THROTTLED_FILE, "0x50000\n")  # both over; the sticky bits stay
        after_lines(10)
        reporter.stop()
        reporter.join(2)
    got = health_records(caplog)
    assert got == [
        ("WARNING", "under-voltage: the supply dropped below 4.63 V; use a 5.1 V 3 A supply and a short, thick "
                    "cable (the camera and USB devices draw from it too) (throttled=0x50005)"),
        ("WARNING", "throttled: the CPU is slowed down: improve cooling (heatsink, fan) or the power supply "
                    "(throttled=0x50005)"),
        ("INFO", "under-voltage cleared (throttled=0x50000)"),
        ("INFO", "throttled cleared (throttled=0x50000)"),
    ]
    assert len(lines) >= 25  # one line each, many lines: the log follows changes, not lines
    assert lines[-1]["throttled"] == "0x50000"
    assert lines[-1]["throttled_flags"] == ["under_voltage_occurred", "throttled_occurred"]


def test_throttling_that_happened_before_start_is_one_warning(tmp_path, caplog):
    stats = pipeline_figures(sysfs(tmp_path / "sys", "0x10000"), tmp_path)
    with caplog.at_level(logging.INFO):
        for _ in range(20):
            stats.snapshot()
    assert health_records(caplog) == [
        ("WARNING", "under-voltage occurred since boot, not now: the supply dropped below 4.63 V; use a 5.1 V 3 A "
                    "supply and a short, thick cable (the camera and USB devices draw from it too) (throttled=0x10000)"),
    ]


def camera_stats(tmp_path: Path, source: str = "picam") -> tuple[Figures, Path]:
    proc = meminfo(tmp_path / "proc")
    stats = pipeline_figures(sysfs(tmp_path / "sys"), proc)
    stats.cameras[0].source.name = source
    stats.cameras[0].source.move(SourceState.RUNNING)
    return stats, proc


def test_cma_in_stats_and_one_warning_while_the_camera_runs_short(tmp_path, caplog):
    stats, proc = camera_stats(tmp_path)
    snaps = []
    with caplog.at_level(logging.INFO):
        for free_kb in [400000] * 3 + [20 * 1024] * 5 + [40 * 1024] * 5 + [300000] * 3:
            meminfo(proc, 524288, free_kb)  # 40 MB: above the low mark, not yet free again
            snaps.append(stats.snapshot())
    assert snaps[0]["cma_total_mb"] == 512.0 and snaps[0]["cma_free_mb"] == 390.6
    assert snaps[3]["cma_free_mb"] == 20.0
    got = health_records(caplog)
    assert [level for level, _ in got] == ["WARNING", "INFO"], got
    assert got[0][1].startswith("CMA low: 20 MB free of 512 MB while the camera runs")
    assert "dtoverlay=vc4-kms-v3d,cma-512" in got[0][1]
    assert got[1][1] == "CMA free again: 293 MB of 512 MB"


def test_low_cma_is_not_the_concern_of_other_sources(tmp_path, caplog):
    stats, proc = camera_stats(tmp_path, source="vtest.avi")
    meminfo(proc, 524288, 1024)
    with caplog.at_level(logging.INFO):
        snap = stats.snapshot()
    assert snap["cma_free_mb"] == 1.0 and health_records(caplog) == []


def test_no_cma_no_figures(tmp_path):
    stats, proc = camera_stats(tmp_path)
    meminfo(proc, cma_total_kb=None)
    snap = stats.snapshot()
    assert "cma_total_mb" not in snap and "cma_free_mb" not in snap


@pytest.mark.slow
def test_daemon_logs_each_health_transition_once(tmp_path):
    """The daemon as a process, on fake trees given by --sysfs-root and --procfs-root."""
    root = sysfs(tmp_path / "sys")
    proc = meminfo(tmp_path / "proc")
    with DaemonProcess("run", "--source", str(VTEST), "--loop", "--port", "0", "--threads", "1",
                       "--stats-interval", "0.5", "--sysfs-root", str(root), "--procfs-root", str(proc)) as d:
        d.wait_for(lambda: d.json("/api/stats")["frames_inferred"] > 2)
        stats = d.json("/api/stats")
        assert stats["cma_total_mb"] == 512.0 and stats["cma_free_mb"] == 390.6
        write(root, THROTTLED_FILE, "0x10001\n")
        d.wait_for(lambda: d.output().count("throttled=0x10001") >= 4)
        write(root, THROTTLED_FILE, "0x10000\n")
        d.wait_for(lambda: d.output().count("throttled=0x10000") >= 4)
        code, _ = d.terminate()
        out = d.output()
    assert code == 0
    health = [ln for ln in out.splitlines() if "edgedetect.system.health" in ln]
    assert health == [
        "WARNING edgedetect.system.health: under-voltage: the supply dropped below 4.63 V; use a 5.1 V 3 A supply "
        "and a short, thick cable (the camera and USB devices draw from it too) (throttled=0x10001)",
        "INFO edgedetect.system.health: under-voltage cleared (throttled=0x10000)",
    ], health
    stats_lines = [ln for ln in out.splitlines() if "edgedetect.pipeline.stats:" in ln]
    # CMA is in /api/stats and the journal fields; the short line leaves it out, and a shortage is a WARNING
    assert stats_lines and not any("cma" in ln for ln in stats_lines)
    # several stats lines saw each state of the word; the log has one line per change
    assert sum("throttled=0x10001" in ln for ln in stats_lines) >= 2
    assert sum("throttled=0x10000" in ln for ln in stats_lines) >= 2


# --- doctor ----------------------------------------------------------------------------------

def doctor_checks(*argv: str, env: doctor.Env | None = None) -> dict[str, doctor.Check]:
    args = build_parser().parse_args(["doctor", *argv])
    return {c.name: c for c in doctor.run_checks(args, env or doctor.Env(dev_root=Path(args.dev_root)))}


@pytest.mark.parametrize("machine,bits,ok", [
    ("aarch64", 64, True),
    ("aarch64", 32, False),  # Raspberry Pi OS 32-bit on a Pi 4 runs a 64-bit kernel
    ("armv7l", 32, False),
    ("x86_64", 64, True),
])
def test_doctor_64_bit(machine, bits, ok):
    check = doctor.check_arch(doctor.Env(machine=machine, pointer_bits=bits))
    assert check.ok is ok
    if ok:
        assert check.line() == f"ok   arch: 64-bit ({machine})"
    else:
        assert check.line() == (f"FAIL arch: 32-bit OS ({machine}, 32-bit Python) -> LiteRT (ai-edge-litert) has no "
                                "32-bit ARM wheels: install the 64-bit Raspberry Pi OS (Bookworm or Trixie, arm64)")


def test_doctor_cma(tmp_path):
    proc = meminfo(tmp_path / "proc", 524288, 400000)
    checks = doctor_checks("--source", "picam", "--procfs-root", str(proc))
    assert checks["cma"].line() == "ok   cma: 391 MB free of 512 MB"
    meminfo(proc, 262144, 16 * 1024)
    assert doctor_checks("--source", "picam", "--procfs-root", str(proc))["cma"].line() == (
        "FAIL cma: 16 MB free of 256 MB: the camera needs about 32 MB to start -> close other camera or GPU "
        "programs, or reserve more: dtoverlay=vc4-kms-v3d,cma-512 in /boot/firmware/config.txt, then reboot")
    assert doctor_checks("--source", str(VTEST), "--procfs-root", str(proc))["cma"].ok  # not the camera: fine
    meminfo(proc, cma_total_kb=None)
    no_cma = doctor_checks("--source", "picam", "--procfs-root", str(proc))["cma"]
    assert not no_cma.ok and no_cma.detail.startswith(f"no CmaTotal in {proc}/meminfo")
    assert doctor_checks("--source", str(VTEST), "--procfs-root", str(proc))["cma"].line() == (
        "ok   cma: no CMA reported (only the Pi camera needs it)")


def store_config(tmp_path: Path, store: Path, enabled: bool = True, min_free_mb: float = 300) -> str:
    cfg = tmp_path / "edgedetect.toml"
    cfg.write_text(f'[record]\nenabled = {str(enabled).lower()}\ndir = "{store}"\nmin_free_mb = {min_free_mb}\n')
    return str(cfg)


def test_doctor_reports_where_the_daemon_writes(tmp_path):
    store = tmp_path / "events"
    store.mkdir()
    proc = tmp_path / "proc"
    write(proc, "self/mounts", f"/dev/root / ext4 rw 0 0\n/dev/mmcblk0p2 {tmp_path} ext4 rw,noatime 0 0\n"
                               f"tmpfs {tmp_path}/other tmpfs rw 0 0\n")
    check = doctor_checks("--config", store_config(tmp_path, store), "--procfs-root", str(proc))["storage"]
    assert check.ok, check.line()
    assert re.fullmatch(rf"ok   storage: event store {store} on /dev/mmcblk0p2 \(the SD card\): "
                        r"\d+\.\d GB free of \d+\.\d GB", check.line()), check.line()
    off = doctor_checks("--config", store_config(tmp_path, tmp_path / "later", enabled=False),
                        "--procfs-root", str(proc))["storage"]
    assert off.ok and off.detail.startswith(f"recording off; event store {tmp_path / 'later'} (not made yet) on "
                                            "/dev/mmcblk0p2 (the SD card): ")


def test_doctor_storage_faults(tmp_path):
    store = tmp_path / "events"
    store.mkdir()
    full = doctor_checks("--config", store_config(tmp_path, store, min_free_mb=9e6))["storage"]
    assert not full.ok and "below record.min_free_mb (9e+06 MB), recording would pause" in full.detail
    if os.geteuid() == 0:
        pytest.skip("root may write anywhere: the permission fault cannot be shown")
    store.chmod(0o500)
    try:
        denied = doctor_checks("--config", store_config(tmp_path, store))["storage"]
    finally:
        store.chmod(0o700)
    assert not denied.ok and f"{store} not writable by user" in denied.detail
    assert "sudo install -d -o edgedetect" in denied.fix
