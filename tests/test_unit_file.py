"""systemd/edgedetect.service: `systemd-analyze verify` with no warnings, and the exposure
score of `systemd-analyze security --offline=true` kept below 4.0."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT

UNIT = ROOT / "systemd" / "edgedetect.service"
EXEC = "/opt/edgedetect/venv/bin/edgedetect"

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")


def analyze(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True, timeout=60)


def test_verify_has_no_warnings(tmp_path: Path) -> None:
    # verify exits 0 on unknown keys and bad values, so its output is what counts. The one
    # thing this host cannot have is the installed program: the unit as shipped gets exactly
    # that one complaint, and a copy whose ExecStart names an existing binary gets none.
    r = analyze("verify", str(UNIT))
    lines = [ln for ln in (r.stdout + r.stderr).splitlines() if ln.strip()]
    assert lines == [f"edgedetect.service: Command {EXEC} is not executable: No such file or directory"], lines
    stub = tmp_path / "edgedetect"
    stub.write_text("#!/bin/sh\n")
    stub.chmod(0o755)
    copy = tmp_path / "edgedetect.service"
    text = UNIT.read_text()
    assert text.count(f"ExecStart={EXEC} ") == 1
    copy.write_text(text.replace(f"ExecStart={EXEC} ", f"ExecStart={stub} "))
    r = analyze("verify", str(copy))
    assert (r.returncode, r.stdout + r.stderr) == (0, "")


def test_verify_would_catch_a_bad_value(tmp_path: Path) -> None:
    """Guards the test above: the same check sees a typo that verify still exits 0 on."""
    bad = tmp_path / "edgedetect.service"
    bad.write_text(UNIT.read_text().replace("WatchdogSec=30", "WatchdogSec=30x\nRestrictAdressFamilies=AF_UNIX")
                   .replace(f"ExecStart={EXEC} ", "ExecStart=/bin/true "))
    r = analyze("verify", str(bad))
    assert r.returncode == 0  # why the output must be read
    assert "Failed to parse sec value, ignoring: 30x" in r.stderr
    assert "Unknown key 'RestrictAdressFamilies' in section [Service]" in r.stderr


def test_required_settings() -> None:
    text = UNIT.read_text()
    for line in ["Type=notify", "NotifyAccess=main", "WatchdogSec=30", "Restart=on-failure", "StartLimitBurst=5",
                 "User=edgedetect", "SupplementaryGroups=video render", "StateDirectory=edgedetect",
                 "Environment=EDGEDETECT_CACHE_DIR=/var/lib/edgedetect/models",
                 f"ExecStart={EXEC} run --config /etc/edgedetect/edgedetect.toml",
                 "DevicePolicy=closed", "DeviceAllow=char-video4linux rw", "DeviceAllow=char-media rw",
                 "DeviceAllow=char-dma_heap rw", "DeviceAllow=char-vchiq rw", "ProtectSystem=strict",
                 "ProtectHome=yes", "PrivateTmp=yes", "NoNewPrivileges=yes",
                 "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK", "MemoryMax=512M"]:
        assert f"\n{line}\n" in text, line


def test_security_exposure_below_4(record_property) -> None:
    r = analyze("security", "--offline=true", str(UNIT))
    m = re.search(r"Overall exposure level for edgedetect\.service: (\d+\.\d+)", r.stdout)
    assert m, r.stdout[-500:] + r.stderr
    exposure = float(m.group(1))
    record_property("exposure", exposure)
    print(f"systemd-analyze security exposure: {exposure}")
    assert exposure < 4.0
