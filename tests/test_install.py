"""deploy/install.sh against a temporary root, with the apt, user and systemctl steps off:
what lands where, idempotence (the tree hashes the same after a second run), a user's config
kept, uninstall and purge, on a Bookworm and a Trixie os-release, and the early refusals."""

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

# /etc/os-release as 64-bit Raspberry Pi OS ships it (the Debian one), and what the installer
# expects there: the release's Python and its apt numpy's major version.
OS_RELEASES = {
    "bookworm": ('PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
                 'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n', "3.11", "1"),
    "trixie": ('PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\n'
               'VERSION="13 (trixie)"\nVERSION_CODENAME=trixie\nDEBIAN_VERSION_FULL=13.1\nID=debian\n', "3.13", "2"),
}
HOST_PY = "%d.%d" % sys.version_info[:2]


def write_os_release(root: Path, text: str) -> None:
    (root / "etc").mkdir(parents=True, exist_ok=True)
    (root / "etc/os-release").write_text(text)


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
@pytest.mark.parametrize("release", sorted(OS_RELEASES))
def test_install_twice_then_uninstall_and_purge(tmp_path: Path, wheel: Path, release: str) -> None:
    root = tmp_path / "root"
    root.mkdir()
    text, py, numpy_major = OS_RELEASES[release]
    write_os_release(root, text)
    first = install(root, wheel)
    assert first.returncode == 0, first.stderr
    # The release is read from the target root's os-release.
    assert f"os: Debian GNU/Linux {12 if release == 'bookworm' else 13} ({release}): Python {py}, " \
           f"numpy {numpy_major}.x from apt" in first.stdout
    # The venv here is built from the test's Python: a mismatch with the release's is reported.
    mismatch = f"is Python {HOST_PY}, but {release}'s is {py}"
    assert (mismatch in first.stderr) == (HOST_PY != py), first.stderr
    # What lands where.
    venv = root / "opt/edgedetect/venv"
    assert (venv / "bin/edgedetect").is_file()
    assert f"#!{venv}/bin/python" in (venv / "bin/edgedetect").read_text().splitlines()[0]
    assert "include-system-site-packages = true" in (venv / "pyvenv.cfg").read_text()
    r = subprocess.run([str(venv / "bin/python"), "-I", "-c", "import edgedetect.detect.catalogue, edgedetect.sinks.systemd"],
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
    assert cfg.source.uri == "picam" and cfg.http.token == token and cfg.display.mode == "auto"

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


# A 32-bit kernel, and the 64-bit kernel that 32-bit Raspberry Pi OS boots on a Pi 4 (uname says
# aarch64, the userland is armhf).
@pytest.mark.parametrize("machine", ["armv7l", "aarch64"])
def test_refuses_a_32bit_os(tmp_path: Path, machine: str) -> None:
    env = _fake_bin(tmp_path, uname=f"echo {machine}", getconf="echo 32", dpkg="echo armhf")
    r = subprocess.run(["bash", str(SCRIPT), "--root", str(tmp_path), "--no-apt"], env={**os.environ, **env},
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 1
    assert r.stderr.strip() == (f"edgedetect-install: error: 32-bit OS ({machine}, armhf): LiteRT (ai-edge-litert) "
                                "has no 32-bit ARM wheels; install the 64-bit Raspberry Pi OS (Bookworm or Trixie, "
                                "arm64)")
    assert list(tmp_path.iterdir()) == [tmp_path / "bin"]  # nothing written


def _checks_only(root: Path) -> subprocess.CompletedProcess[str]:
    """The early checks, then an uninstall of nothing: no venv, no wheel needed."""
    return subprocess.run(["bash", str(SCRIPT), "--root", str(root), "--no-systemctl", "--no-user",
                           "--allow-any-arch", "--python", sys.executable, "--uninstall"],
                          capture_output=True, text=True, timeout=30)


@pytest.mark.parametrize("release", sorted(OS_RELEASES))
def test_reads_the_release_from_os_release(tmp_path: Path, release: str) -> None:
    text, py, numpy_major = OS_RELEASES[release]
    write_os_release(tmp_path, text)
    r = _checks_only(tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[0].endswith(f"({release}): Python {py}, numpy {numpy_major}.x from apt")
    if HOST_PY == py:
        assert r.stderr == ""
    else:
        assert r.stderr.strip() == (f"edgedetect-install: warning: {sys.executable} is Python {HOST_PY}, but "
                                    f"{release}'s is {py} (numpy {numpy_major}.x): apt's picamera2 may not load "
                                    "in the venv")


def test_release_unknown_old_and_absent(tmp_path: Path) -> None:
    write_os_release(tmp_path, OS_RELEASES["trixie"][0].replace("trixie", "forky").replace("13", "14"))
    r = _checks_only(tmp_path)
    assert r.returncode == 0, r.stderr
    assert "warning: Debian GNU/Linux 14 (forky): not a release edgedetect is tested on (Bookworm, Trixie)" in r.stderr

    write_os_release(tmp_path, OS_RELEASES["bookworm"][0].replace("bookworm", "bullseye").replace("12", "11"))
    r = _checks_only(tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == ("edgedetect-install: error: Debian GNU/Linux 11 (bullseye) is too old: edgedetect "
                                "installs on 64-bit Raspberry Pi OS Bookworm or Trixie")

    (tmp_path / "etc/os-release").unlink()
    r = _checks_only(tmp_path)
    assert r.returncode == 0, r.stderr
    assert f"os: no VERSION_CODENAME in {tmp_path}/etc/os-release: release not checked" in r.stdout


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


def test_package_metadata_has_an_spdx_licence_and_no_deprecation_warning() -> None:
    """setuptools reads pyproject.toml as every build does (pip install -e, the wheel): the licence
    is an SPDX expression with its file, and nothing is deprecated (a table there printed 14
    lines of warning per build step, about 90 in setup-dev.sh)."""
    import warnings

    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        dist = apply_configuration(Distribution(), ROOT / "pyproject.toml")
    assert [str(w.message).splitlines()[0] for w in caught] == []
    assert dist.metadata.license_expression == "Apache-2.0" and dist.metadata.license_files == ["LICENSE"]
    assert (ROOT / "LICENSE").read_text().split()[:3] == ["Apache", "License", "Version"]


def test_apt_step_skips_recommends_and_names_what_the_daemon_imports(tmp_path: Path) -> None:
    """The installer's apt step, with dpkg-query (nothing installed) and apt-get played by scripts
    that record their arguments; apt-get refuses the install, which ends the run right there."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "apt-get.calls"
    bin_dir.mkdir()
    (bin_dir / "dpkg-query").write_text("#!/bin/sh\nexit 1\n")
    (bin_dir / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {calls}\n[ "$1" = update ]\n')
    for f in bin_dir.iterdir():
        f.chmod(0o755)
    root = tmp_path / "root"
    root.mkdir()
    write_os_release(root, OS_RELEASES["bookworm"][0])
    r = subprocess.run(["bash", str(SCRIPT), "--root", str(root), "--allow-any-arch", "--no-user", "--no-systemctl",
                        "--python", sys.executable], capture_output=True, text=True, timeout=60,
                       env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"})
    assert r.returncode != 0 and not (root / "opt").exists(), r.stdout + r.stderr
    update, install_line = calls.read_text().splitlines()
    args = install_line.split()
    assert update.startswith("update") and args[0] == "install" and "--no-install-recommends" in args
    # picamera2 (the camera), kms++ (the monitor), python3-systemd (journal fields), numpy: named
    # themselves, so none of them rides on a recommend that is no longer installed.
    assert {"python3-picamera2", "python3-kms++", "python3-systemd", "python3-numpy"} <= set(args)


def test_readme_and_service_doc_start_the_service_as_the_installer_says() -> None:
    """The installer ends with 'Start it now with ...'; the docs must not say 'then reboot'."""
    said = SCRIPT.read_text().split("Start it now with '", 1)[1].split("'", 1)[0].replace("$NAME", "edgedetect")
    assert said == "sudo systemctl start edgedetect"
    for doc in (ROOT / "README.md", ROOT / "docs" / "service.md"):
        block = doc.read_text().split("sudo deploy/install.sh", 1)[1].split("```", 1)[0]
        assert said in block and "reboot" not in block, (doc.name, block)
