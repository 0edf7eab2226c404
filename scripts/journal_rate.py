#!/usr/bin/env python3
"""Measure what the idle daemon costs the journal: bytes per hour at a stats interval.

Runs `edgedetect run` on a still, empty scene (nothing to detect, [record] on) for a while, its
log going to a real systemd-journald started here in a namespace of its own (so the host's
journal is untouched), in the way systemd connects a service:

    plain       stderr is a journald stream (JOURNAL_STREAM set): "<6>INFO ..." lines
    structured  the same, plus python-systemd's journal.send (here a small native-protocol
                client), so each figures line carries its EDGEDETECT_* fields

It prints, per mode, the lines logged and, scaled to one hour: the bytes the daemon sent, the
bytes of the entries as journald stores them (`journalctl -o export`: every field journald adds,
before its deduplication and compression), and the growth of the journal's used arena on disk.

    sudo scripts/journal_rate.py --minutes 10          # needs root and /lib/systemd/systemd-journald
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
JOURNALD = "/lib/systemd/systemd-journald"

# Started as `python -c WRAPPER structured|plain ARGS...`: counts what the daemon hands to the
# journal, and in structured mode gives it a journal.send that speaks journald's native protocol.
WRAPPER = r"""
import atexit, os, socket, struct, sys
mode, sock_path, count_path = sys.argv[1:4]
sent = [0]
if mode == "structured":
    import edgedetect.system.journal as j
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    def send(MESSAGE, **fields):
        out = bytearray()
        for k, v in {"MESSAGE": MESSAGE, **fields}.items():
            b = str(v).encode()
            if b"\n" in b:
                out += k.encode() + b"\n" + struct.pack("<Q", len(b)) + b + b"\n"
            else:
                out += k.encode() + b"=" + b + b"\n"
        s.sendto(bytes(out), sock_path)
        sent[0] += len(out)
    j.journal_send = lambda: send
atexit.register(lambda: open(count_path, "w").write(str(sent[0])))
from edgedetect.cli import main
sys.exit(main(sys.argv[4:]))
"""


def journal_stream(namespace_dir: Path, identifier: str) -> socket.socket:
    """A stream to journald, set up as systemd sets up a service's stderr."""
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.connect(str(namespace_dir / "stdout"))
    s.shutdown(socket.SHUT_RD)
    # identifier, unit, priority, level prefix, forward to syslog, kmsg, console
    s.sendall(f"{identifier}\n\n6\n1\n0\n0\n0\n".encode())
    return s


def used_arena(namespace: str) -> int:
    """Bytes in use in the namespace's journal files: the end of each file's last object (journald
    allocates the files in 8 MiB steps, so their size says little)."""
    machine = Path("/etc/machine-id").read_text().strip()
    total = 0
    for d in (Path("/var/log/journal"), Path("/run/log/journal")):
        for f in (d / f"{machine}.{namespace}").glob("*.journal"):
            with f.open("rb") as fh:
                head = fh.read(144)
                tail = struct.unpack_from("<Q", head, 136)[0]  # header.tail_object_offset
                fh.seek(tail + 8)
                size = struct.unpack("<Q", fh.read(8))[0]  # that object's size
            total += tail + size
    return total


def journal_out(namespace: str, fmt: str, *match: str) -> bytes:
    return subprocess.run(["journalctl", f"--namespace={namespace}", "-o", fmt, *match], capture_output=True).stdout


def entries_of(namespace: str, mode: str) -> tuple[int, int, int]:
    """(entries, bytes of their text lines with the <N> prefix, bytes in export format)."""
    # The stream's lines carry the identifier given at connect time; journal.send sets its own.
    match = [f"SYSLOG_IDENTIFIER=edgedetect-{mode}"] + (["+", "SYSLOG_IDENTIFIER=edgedetect"] if mode == "structured" else [])
    export = journal_out(namespace, "export", *match)
    text = journal_out(namespace, "cat", *match)
    n = text.count(b"\n")
    return n, len(text) + 3 * n, len(export)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--stats-interval", type=float, default=10.0, help="the daemon's default is 10 s")
    args = ap.parse_args()
    import cv2
    import numpy as np

    work = Path(tempfile.mkdtemp(prefix="journal-rate-"))
    scene = work / "scene"
    scene.mkdir()
    img = np.full((480, 640, 3), 90, np.uint8)
    cv2.rectangle(img, (100, 100), (300, 250), (40, 60, 200), -1)
    cv2.imwrite(str(scene / "still.png"), img)
    namespace = f"edgerate{os.getpid()}"
    ns_dir = Path(f"/run/systemd/journal.{namespace}")
    journald = subprocess.Popen([JOURNALD, namespace], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = []
    try:
        deadline = time.monotonic() + 10
        while not (ns_dir / "stdout").exists():
            if time.monotonic() > deadline:
                raise SystemExit("journald did not start")
            time.sleep(0.1)
        time.sleep(0.5)
        arena0 = used_arena(namespace)
        for mode in ("plain", "structured"):
            cfg = work / f"{mode}.toml"
            cfg.write_text(f'[record]\nenabled = true\ndir = "{work / mode}-events"\n'
                           f"[stats]\ninterval = {args.stats_interval}\n[http]\nport = 0\n")
            stream = journal_stream(ns_dir, f"edgedetect-{mode}")
            st = os.fstat(stream.fileno())
            env = dict(os.environ, JOURNAL_STREAM=f"{st.st_dev}:{st.st_ino}")
            cmd = [sys.executable, "-c", WRAPPER, mode, str(ns_dir / "socket"), str(work / f"{mode}.sent"),
                   "run", "--config", str(cfg), "--source", str(scene), "--loop", "--threads", "1"]
            procs.append((mode, subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL,
                                                 stdout=stream.fileno(), stderr=stream.fileno())))
            stream.close()
        t0 = time.monotonic()
        time.sleep(args.minutes * 60)
        for _, p in procs:
            p.send_signal(signal.SIGTERM)
        for _, p in procs:
            p.wait(20)
        hours = (time.monotonic() - t0) / 3600
        time.sleep(1)
        subprocess.run(["journalctl", f"--namespace={namespace}", "--sync"], capture_output=True)
        arena = used_arena(namespace) - arena0
        print(f"{args.minutes:g} min per mode at stats.interval = {args.stats_interval:g} s; per hour:")
        total_export = 0
        for mode, p in procs:
            entries, text, exp = entries_of(namespace, mode)
            total_export += exp
            sent = text
            if mode == "structured":  # fields and all, as handed to journald
                sent = int((work / f"{mode}.sent").read_text())
            print(f"  {mode:10}  {entries / hours:6.0f} entries, {sent / hours / 1024:7.1f} KiB sent, "
                  f"{exp / hours / 1024:7.1f} KiB as entries (export format); exit {p.returncode}")
        print(f"  journal arena used by both, on disk: {arena / hours / 1024:7.1f} KiB")
    finally:
        for _, p in procs:
            if p.poll() is None:
                p.kill()
        journald.terminate()
        journald.wait(10)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
