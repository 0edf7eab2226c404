"""What the event-store tests share: a real small file system, and a daemon config with [record]."""

from __future__ import annotations

import contextlib
import json
import subprocess
from pathlib import Path

import pytest

from conftest import VTEST


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
