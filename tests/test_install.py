"""deploy/install.sh against a temporary root, with the apt, user and systemctl steps off:
what lands where, idempotence (the tree hashes the same after a second run), a user's config
kept, uninstall and purge, and the early refusals."""

from __future__ import annotations

import hashlib
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import MODELS, ROOT

SCRIPT = ROOT / "deploy" / "install.sh"


@pytest.fixture(scope="session")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("wheel")
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation",
                        "-w", str(out), str(ROOT)], capture_output=True, text=True, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot build the wheel here (pip install wheel into the venv): {r.stderr[-300:]}")
    return next(out.glob("edgedetect-*.whl"))


def install(root: Path, wheel: Path, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    args = ["bash", str(SCRIPT), "--root", str(root), "--no-apt", "--no-systemctl", "--no-user",
            "--allow-any-arch", "--no-deps", "--python", sys.executable, "--wheel", str(wheel),
            "--models-from", str(MODELS), *extra]
    return subprocess.run(args, capture_output=True, text=True, timeout=120, env={**os.environ, **(env or {})})


def tree_hash(root: Path) -> dict[str, str]:
    """Every path under root with its type, mode and content (or link target)."""
    out = {}
    for p in sorted(root.rglob("*")):
        st = p.lstat()
        rel = str(p.relative_to(root))
        if stat.S_ISLNK(st.st_mode):
            out[rel] = f"link {os.readlink(p)}"
        elif stat.S_ISDIR(st.st_mode):
            out[rel] = f"dir {stat.S_IMODE(st.st_mode):o}"
        else:
            out[rel] = f"file {stat.S_IMODE(st.st_mode):o} {hashlib.sha256(p.read_bytes()).hexdigest()}"
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_install_twice_then_uninstall_and_purge(tmp_path: Path, wheel: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    first = install(root, wheel)
    assert first.returncode == 0, first.stderr
    # What lands where.
    venv = root / "opt/edgedetect/venv"
    assert (venv / "bin/edgedetect").is_file()
    assert f"#!{venv}/bin/python" in (venv / "bin/edgedetect").read_text().splitlines()[0]
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    r = subprocess.run([str(venv / "bin/python"), "-I", "-c", "import edgedetect.catalogue, edgedetect.service"],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    cache = root / "var/lib/edgedetect/models/ssd-mobilenet-v2-coco"
    for name in ("mobilenet_ssd_v2_coco_quant_postprocess.tflite", "coco_labels.txt"):
        assert (cache / name).is_file()
    assert (cache / "mobilenet_ssd_v2_coco_quant_postprocess.tflite").read_bytes() == \
        (MODELS / "ssd_mobilenet_v2_coco_quant_postprocess.tflite").read_bytes()
    unit = root / "etc/systemd/system/edgedetect.service"
    assert unit.read_bytes() == (ROOT / "systemd/edgedetect.service").read_bytes()
    config = root / "etc/edgedetect/edgedetect.toml"
    text = config.read_text()
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert "@TOKEN@" not in text and 'host = "0.0.0.0"' in text
    token = next(line.split('"')[1] for line in text.splitlines() if line.startswith("token"))
    assert len(token) == 32
    assert f":8080/?token={token}" in first.stdout
    # The installed config is valid for the daemon.
    from edgedetect import config as cfgmod

    cfg = cfgmod.load(config)
    assert cfg.source.uri == "picam" and cfg.http.token == token and cfg.display.mode == "drm"

    # Second run: nothing changes, byte for byte.
    before = tree_hash(root)
    second = install(root, wheel)
    assert second.returncode == 0, second.stderr
    assert tree_hash(root) == before
    assert "program: up to date" in second.stdout and "unit: up to date" in second.stdout
    assert f"config: {config} kept" in second.stdout

    # A user's config is never overwritten.
    config.write_text(text.replace("threshold = 0.5", "threshold = 0.7"))
    assert install(root, wheel).returncode == 0
    assert "threshold = 0.7" in config.read_text()

    # Uninstall keeps config and models; purge removes them.
    gone = install(root, wheel, "--uninstall")
    assert gone.returncode == 0, gone.stderr
    assert not unit.exists() and not (root / "opt/edgedetect").exists()
    assert config.is_file() and (cache / "coco_labels.txt").is_file()
    purged = install(root, wheel, "--uninstall", "--purge")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "etc/edgedetect").exists() and not (root / "var/lib/edgedetect").exists()


def _fake_bin(tmp_path: Path, **scripts: str) -> dict[str, str]:
    bindir = tmp_path / "bin"
    bindir.mkdir()
    for name, body in scripts.items():
        p = bindir / name
        p.write_text("#!/bin/sh\n" + body + "\n")
        p.chmod(0o755)
    return {"PATH": f"{bindir}:{os.environ['PATH']}"}


def test_refuses_a_32bit_os(tmp_path: Path) -> None:
    env = _fake_bin(tmp_path, uname='echo armv7l', getconf='echo 32', dpkg='echo armhf')
    r = subprocess.run(["bash", str(SCRIPT), "--root", str(tmp_path), "--no-apt"], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == ("edgedetect-install: error: 32-bit OS (armv7l, armhf): edgedetect needs 64-bit "
                                "Raspberry Pi OS (arm64); flash the 64-bit Bookworm or Trixie image")
    assert list(tmp_path.iterdir()) == [tmp_path / "bin"]  # nothing written


def test_refuses_x86_without_flag_and_an_old_python(tmp_path: Path) -> None:
    if os.uname().machine == "aarch64":
        pytest.skip("this host is arm64")
    r = subprocess.run(["bash", str(SCRIPT), "--root", str(tmp_path)], capture_output=True, text=True, timeout=30)
    assert r.returncode == 1 and "unsupported architecture" in r.stderr
    old = tmp_path / "python3.9"
    old.write_text("#!/bin/sh\ncase \"$2\" in *version_info*\\<*) exit 1;; esac\necho 3.9\n")
    old.chmod(0o755)
    r = subprocess.run(["bash", str(SCRIPT), "--root", str(tmp_path), "--allow-any-arch", "--python", str(old)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == ("edgedetect-install: error: Python 3.9 is too old: edgedetect needs Python 3.11 "
                                "or newer (Raspberry Pi OS Bookworm has 3.11, Trixie 3.13)")


def test_shellcheck_clean() -> None:
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt install shellcheck)")
    r = subprocess.run(["shellcheck", "--severity=style", str(SCRIPT)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
