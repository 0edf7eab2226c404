"""An RTSP camera played by the test: GStreamer's RTSP server on loopback, serving H.264 MP4
files made at test time, in a process of its own that the test can kill and start again.

The server runs under /usr/bin/python3 (Debian's, with python3-gi and GstRtspServer); the venv's
python cannot import gi. Run as a script it serves `MOUNT=FILE` pairs on `--port`:

    /usr/bin/python3 tests/rtspserver.py --port 8554 /cam=/tmp/a.mp4 /sub=/tmp/b.mp4

Imported, `RtspCamera` starts and stops that process, and `make_h264_mp4` makes the files with
PyAV's libx264 (a keyframe every second at 10 fps), so the test knows every packet the camera
sends and can compare a clip's packets with them."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

SYSTEM_PYTHON = "/usr/bin/python3"
PIPELINE = "( filesrc location={path} ! qtdemux ! h264parse ! rtph264pay name=pay0 pt=96 )"


def serve(port: int, mounts: dict[str, str]) -> None:
    import gi

    gi.require_version("Gst", "1.0")
    gi.require_version("GstRtspServer", "1.0")
    from gi.repository import GLib, Gst, GstRtspServer

    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address("127.0.0.1")
    server.set_service(str(port))
    for mount, path in mounts.items():
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(PIPELINE.format(path=path))
        # One pipeline for every client of a mount, as a camera has one sensor: two readers of
        # the same mount see the same packets.
        factory.set_shared(True)
        server.get_mount_points().add_factory(mount, factory)
    server.attach(None)
    loop = GLib.MainLoop()
    signal.signal(signal.SIGTERM, lambda *_: loop.quit())
    print("serving", flush=True)
    loop.run()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_h264_mp4(out: Path, source: Path, frames: int, size: tuple[int, int] | None = None,
                  fps: int = 10) -> Path:
    """The first `frames` frames of `source` as H.264 in MP4 (libx264, a keyframe every second),
    resized to `size` (width, height) if given."""
    import av
    import cv2

    cap = cv2.VideoCapture(str(source))
    with av.open(str(out), "w") as c:
        s = c.add_stream("libx264", rate=fps)
        s.pix_fmt = "yuv420p"
        s.options = {"preset": "superfast", "g": str(fps), "keyint_min": str(fps), "sc_threshold": "0", "bf": "0"}
        for i in range(frames):
            ok, img = cap.read()
            if not ok:
                break
            if size is not None:
                img = cv2.resize(img, size, interpolation=cv2.INTER_AREA)
            if i == 0:
                s.width, s.height = img.shape[1], img.shape[0]
            vf = av.VideoFrame.from_ndarray(img, format="bgr24")
            vf.pts = i
            c.mux(s.encode(vf))
        c.mux(s.encode(None))
    cap.release()
    return out


class RtspCamera:
    """The server process; `url(mount)` is where a mount is read."""

    def __init__(self, mounts: dict[str, Path], port: int | None = None):
        self.mounts = {m: str(p) for m, p in mounts.items()}
        self.port = port or free_port()
        self.proc: subprocess.Popen[str] | None = None

    def url(self, mount: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}{mount}"

    def start(self, timeout: float = 15.0) -> "RtspCamera":
        assert self.proc is None or self.proc.poll() is not None, "already running"
        args = [SYSTEM_PYTHON, __file__, "--port", str(self.port), *(f"{m}={p}" for m, p in self.mounts.items())]
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
        self.proc = subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the RTSP server exited with {self.proc.returncode}: {self.proc.stdout.read()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"the RTSP server did not listen on {self.port} in {timeout} s")

    def stop(self, timeout: float = 5.0) -> None:
        """SIGKILL to our server's PID: a camera that vanishes (no RTSP TEARDOWN, no goodbye)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout)
        if self.proc.stdout is not None:
            self.proc.stdout.close()

    def __enter__(self) -> "RtspCamera":
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    port = int(sys.argv[sys.argv.index("--port") + 1])
    pairs = [a for a in sys.argv[1:] if "=" in a]
    serve(port, dict(a.split("=", 1) for a in pairs))
