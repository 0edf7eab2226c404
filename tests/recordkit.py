"""What the event-store tests share: a real small file system, a daemon config with [record], and a
recorder fed captures by hand."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import cv2
import pytest

from conftest import VTEST
from edgedetect import clock
from edgedetect.frames import Frame
from edgedetect.sources.base import Capture
from edgedetect.storage.recorder import ClipRecorder, RecorderFigures


@contextlib.contextmanager
def tmpfs(path: Path, size: str):
    """A really small file system of its own (root only)."""
    path.mkdir(parents=True, exist_ok=True)
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], capture_output=True,
                       text=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


class Ext4Drive:
    """A real ext4 file system on a loop device, mounted with errors=remount-ro as a USB drive
    often is: `fail()` makes the kernel find an error (ext4's own trigger_fs_error), after which
    every write gets EROFS; `replug()` mounts it again from a new loop device, as after the user
    unplugs and plugs it back in."""

    def __init__(self, image: Path, mountpoint: Path, size_mb: int = 64):
        self.image, self.path = image, mountpoint
        mountpoint.mkdir(parents=True, exist_ok=True)
        r = subprocess.run(["mkfs.ext4", "-q", "-F", str(image), f"{size_mb}M"], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"cannot make an ext4 file system here: {r.stderr.strip()}")
        self.device = ""
        self._mount()

    def _mount(self) -> None:
        r = subprocess.run(["losetup", "-f", "--show", str(self.image)], capture_output=True, text=True)
        if r.returncode != 0:
            pytest.skip(f"no loop device here (needs root): {r.stderr.strip()}")
        self.device = r.stdout.strip()
        subprocess.run(["mount", "-o", "errors=remount-ro", self.device, str(self.path)], check=True,
                       capture_output=True)

    def fail(self) -> None:
        name = Path(self.device).name
        Path(f"/sys/fs/ext4/{name}/trigger_fs_error").write_text("edgedetect test: a failing drive\n")

    def replug(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)
        subprocess.run(["e2fsck", "-p", "-f", str(self.image)], check=False, capture_output=True)
        self._mount()

    def close(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False, capture_output=True)
        subprocess.run(["losetup", "-d", self.device], check=False, capture_output=True)


@contextlib.contextmanager
def ext4_drive(tmp: Path):
    drive = Ext4Drive(tmp / "drive.img", tmp / "drive")
    try:
        yield drive
    finally:
        drive.close()


def fill(path: Path) -> Path:
    """Fill the file system holding `path` to the last byte."""
    filler = path / "filler"
    with open(filler, "wb") as f:
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    return filler


HALL_ZONE = [[0.0, 0.45], [0.55, 0.45], [0.55, 1.0], [0.0, 1.0]]  # the lower left: the path in front


def record_config(tmp: Path, store: Path, *, extra: str = "", source: str = str(VTEST), pace: bool = True,
                  loop: bool = False, stats: float = 1.0) -> Path:
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""
[source]
uri = "{source}"
pace = {str(pace).lower()}
loop = {str(loop).lower()}
[http]
port = 0
[stats]
interval = {stats}
[record]
enabled = true
dir = "{store}"
{extra}
[[zones]]
name = "front"
polygon = {json.dumps(HALL_ZONE)}
""")
    return cfg


def vtest_part(out: Path, frames: int, size: tuple[int, int] | None = None) -> Path:
    """The first `frames` frames of vtest.avi (10 fps), resized to `size` (width, height) if
    given, as MJPEG in AVI at `out`."""
    src = cv2.VideoCapture(str(VTEST))
    w, h = size or (int(src.get(cv2.CAP_PROP_FRAME_WIDTH)), int(src.get(cv2.CAP_PROP_FRAME_HEIGHT)))
    writer = cv2.VideoWriter(str(out), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, (w, h))
    for _ in range(frames):
        ok, img = src.read()
        if not ok:
            break
        writer.write(img if size is None else cv2.resize(img, (w, h), interpolation=cv2.INTER_AREA))
    writer.release()
    src.release()
    return out


def record_one_clip(captures: list[tuple[float, Capture]], begin_at: int, end_at: int, path: Path) -> RecorderFigures:
    """`captures` ((clock.now() after the read, the capture)) fed to a recorder (1 s of pre-roll and
    of post-roll) as the pipeline feeds it, with an event from the capture at `begin_at` to the one at
    `end_at`; the clip is written to `path`. Returns the recorder's figures."""
    done: list[tuple] = []
    rec = ClipRecorder(1.0, 1.0, 60.0, lambda *a: done.append(a))
    for i, (t, cap) in enumerate(captures):
        if i == begin_at:
            rec.begin("c1", t, path)
        if i == end_at:
            rec.end("c1", t)
        rec._commands()
        rec._encode(Frame(i, t, cap.image, packets=cap.packets))
    rec._finish_due(clock.now() + 10)
    assert len(done) == 1 and done[0][4] is None, done
    return rec.current()
