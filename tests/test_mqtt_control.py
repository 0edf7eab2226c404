"""Each camera's switches over MQTT (detect, motion, snapshots, recordings), against a real
mosquitto and the real daemon with the real SSD model: ON/OFF on BASE[/CAMERA]/SWITCH/set, the
state echoed and retained, a switch in Home Assistant discovery, detection that stops costing
inference and comes back, bad commands logged once and ignored, and the states kept over a
restart in the state file."""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path

import cv2
import numpy as np
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import VTEST
from daemonproc import DaemonProcess
from edgedetect.config import MotionConfig
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.builder import Pipeline, PipelineOptions
from edgedetect.pipeline.camera import CameraSpec
from edgedetect.pipeline.motion import MotionGate
from edgedetect.pipeline.scheduler import Scheduler
from edgedetect.pipeline.slot import LatestSlot
from edgedetect.sources.video import VideoFile
from edgedetect.switches import Switches
from mosquitto import MOSQUITTO, Broker, Recorder

needs_broker = pytest.mark.skipif(not MOSQUITTO.exists(), reason="mosquitto not installed (apt install mosquitto)")

DEVICE = "pi-switch"
BASE = f"edgedetect/{DEVICE}"


def config(tmp: Path, port: int, cameras: bool) -> Path:
    """vtest.avi in a loop, as one camera or as the cameras hall and yard."""
    sources = "".join(f'[cameras.{name}]\nuri = "{VTEST}"\n' for name in ("hall", "yard")) if cameras else ""
    (tmp / "state").mkdir(exist_ok=True)
    cfg = tmp / "edgedetect.toml"
    cfg.write_text(f"""{sources}
[source]
{"" if cameras else f'uri = "{VTEST}"'}
loop = true
[http]
port = 0
[stats]
interval = 1.0
[mqtt]
enabled = true
host = "127.0.0.1"
port = {port}
device = "{DEVICE}"
state_file = "{tmp / 'state' / 'switches.json'}"
""")
    return cfg


def send(port: int, topic: str, payload: str) -> None:
    """One command, as Home Assistant sends it: QoS 1, not retained."""
    c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=f"cmd-{os.getpid()}-{time.time()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(5)
    c.disconnect()
    c.loop_stop()


def retained(port: int, topic: str) -> bytes:
    """What a subscriber that comes now gets on `topic` (the retained message)."""
    with Recorder(port, topic) as late:
        return late.wait(lambda ms: [m for m in ms if m.retain], timeout=10)[-1].payload


def counts(d: DaemonProcess, camera: str | None) -> tuple[int, int]:
    """(frames inferred, frames published) of one camera."""
    snap = d.json("/api/stats")
    figs = snap["cameras"][camera] if camera else snap
    return figs["frames_inferred"], figs["frames_published"]


def state_echo(rec: Recorder, topic: str, word: bytes, after: float) -> None:
    rec.wait(lambda ms: any(m.topic == topic and m.payload == word and m.t >= after for m in ms))


@pytest.mark.slow
@needs_broker
def test_detect_switched_off_and_on_per_camera(tmp_path: Path) -> None:
    with Broker(tmp_path / "broker") as broker, Recorder(broker.port) as rec:
        with DaemonProcess("run", "--config", str(config(tmp_path, broker.port, cameras=True))) as d:
            d.wait_for(lambda: all(counts(d, c)[0] > 3 for c in ("hall", "yard")), timeout=60)
            # each camera's switches are in discovery, with the topics they take and echo on
            node = f"edgedetect_{DEVICE}_hall"
            disc = json.loads(rec.wait(lambda ms: [m for m in ms if m.topic ==
                                                   f"homeassistant/switch/{node}/detect/config"])[-1].payload)
            assert disc["command_topic"] == f"{BASE}/hall/detect/set"
            assert disc["state_topic"] == f"{BASE}/hall/detect/state"
            assert disc["availability_topic"] == f"{BASE}/availability" and disc["unique_id"] == f"{node}_detect"
            found = {m.topic for m in rec.messages if m.topic.startswith("homeassistant/switch/")}
            assert found == {f"homeassistant/switch/edgedetect_{DEVICE}_{c}/{s}/config" for c in ("hall", "yard")
                             for s in ("detect", "motion", "snapshots", "recordings")}
            assert retained(broker.port, f"{BASE}/hall/detect/state") == b"ON"

            t_off = time.monotonic()
            send(broker.port, f"{BASE}/hall/detect/set", "OFF")
            state_echo(rec, f"{BASE}/hall/detect/state", b"OFF", t_off)
            time.sleep(0.5)  # a frame handed to the detector before the command is done
            hall0, yard0 = counts(d, "hall"), counts(d, "yard")
            # commands that cannot be followed: each topic logged once, all ignored
            for _ in range(3):
                send(broker.port, f"{BASE}/hall/detect/set", "MAYBE")
                send(broker.port, f"{BASE}/garage/detect/set", "ON")
            d.wait_for(lambda: d.json("/api/stats")["mqtt"]["commands_rejected"] == 6)
            time.sleep(2.0)
            hall1, yard1 = counts(d, "hall"), counts(d, "yard")
            stats = d.json("/api/stats")
            # the state echo is retained: a subscriber that comes now gets OFF
            assert retained(broker.port, f"{BASE}/hall/detect/state") == b"OFF"
            saved = json.loads((tmp_path / "state" / "switches.json").read_text())

            t_on = time.monotonic()
            send(broker.port, f"{BASE}/hall/detect/set", "ON")
            state_echo(rec, f"{BASE}/hall/detect/state", b"ON", t_on)
            d.wait_for(lambda: counts(d, "hall")[0] > hall1[0] + 5)
            code, _ = d.terminate()
        log = d.output()
    assert code == 0
    # off: no inference for hall (rate 0), its frames still published; yard inferred on
    assert hall1[0] == hall0[0], (hall0, hall1)
    assert hall1[1] > hall0[1] + 10 and yard1[0] > yard0[0] + 5, (hall0, hall1, yard0, yard1)
    assert stats["mqtt"]["switched_off"] == ["hall/detect"] and stats["mqtt"]["commands"] == 1
    assert saved["cameras"]["hall"]["detect"] is False and saved["cameras"]["yard"]["detect"] is True
    bad = [line for line in log.splitlines() if "command on" in line and "ignored" in line]
    assert len(bad) == 2, bad
    assert any(f"{BASE}/hall/detect/set" in line and "expected ON or OFF" in line for line in bad)
    assert any(f"{BASE}/garage/detect/set" in line and "no camera 'garage'" in line for line in bad)
    print(f"\nhall off for {hall1[1] - hall0[1]} published frames: {hall1[0] - hall0[0]} inferred "
          f"(yard inferred {yard1[0] - yard0[0]} meanwhile); 6 bad commands, {len(bad)} log lines")


@pytest.mark.slow
@needs_broker
def test_switched_off_detection_stays_off_after_a_restart(tmp_path: Path) -> None:
    """One camera without [cameras]: the switches are BASE/SWITCH/set, as every other topic of it.
    The broker is restarted between the daemons (no persistence), so the state seen after the
    restart is the second daemon's own."""
    broker = Broker(tmp_path / "broker")
    cfg = config(tmp_path, broker.port, cameras=False)
    with broker, Recorder(broker.port) as rec:
        with DaemonProcess("run", "--config", str(cfg)) as d:
            d.wait_for(lambda: counts(d, None)[0] > 3, timeout=60)
            # the states are published after the daemon subscribed: from here it hears commands
            rec.wait(lambda ms: any(m.topic == f"{BASE}/recordings/state" for m in ms))
            t_off = time.monotonic()
            send(broker.port, f"{BASE}/detect/set", "off")  # Home Assistant sends ON/OFF; case is forgiven
            send(broker.port, f"{BASE}/snapshots/set", "OFF")
            state_echo(rec, f"{BASE}/snapshots/state", b"OFF", t_off)
            assert rec.on(f"{BASE}/detect/state")[-1].payload == b"OFF"
            assert d.terminate()[0] == 0
        broker.restart()
        rec.connected.wait(10)
        with DaemonProcess("run", "--config", str(cfg)) as d:
            state_echo(rec, f"{BASE}/detect/state", b"OFF", t_off)
            d.wait_for(lambda: counts(d, None)[1] > 30, timeout=60)
            first = counts(d, None)
            time.sleep(2.0)
            second = counts(d, None)
            assert retained(broker.port, f"{BASE}/snapshots/state") == b"OFF"
            assert retained(broker.port, f"{BASE}/motion/state") == b"ON"
            assert d.terminate()[0] == 0
        restarted = d.output()
    assert first[0] == 0 and second[0] == 0 and second[1] > first[1] + 10, (first, second)
    assert "detect of camera camera is OFF" in restarted
    print(f"\nafter the restart: {second[1]} frames published, {second[0]} inferred")


def test_state_file_that_cannot_be_kept_costs_one_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    """A state file in a folder that does not exist (or a read-only disk): the switches work in
    memory and the fault is one warning, counted; a file that is not ours is one warning and all ON."""
    caplog.set_level(logging.INFO, "edgedetect.switches")
    gone = Switches(["hall"], tmp_path / "missing" / "switches.json")
    for on in (False, True, False):
        assert gone.set("hall", "detect", on)
    assert not gone.on("hall", "detect") and gone.on("hall", "motion") and gone.save_failures == 3
    assert len([r for r in caplog.records if "cannot write" in r.message]) == 1
    assert not gone.set("hall", "detect", False)  # no change: nothing written
    with pytest.raises(KeyError):
        gone.set("garage", "detect", False)

    kept = tmp_path / "switches.json"
    Switches(["hall", "yard"], kept).set("yard", "recordings", False)
    assert json.loads(kept.read_text())["cameras"]["yard"]["recordings"] is False
    assert [p.name for p in tmp_path.iterdir() if p.is_file()] == ["switches.json"]  # no temporary left
    again = Switches(["hall", "yard"], kept)
    assert not again.on("yard", "recordings") and again.on("hall", "recordings") and again.on("ghost", "detect")

    kept.write_text('{"cameras": {"yard": {"recordings": "no"}}}')
    caplog.clear()
    assert Switches(["yard"], kept).on("yard", "recordings")
    assert [r.levelname for r in caplog.records] == ["WARNING"] and "not a switch state file" in caplog.text


def still_clip(tmp: Path) -> Path:
    """vtest's first frame (people in it) for 4 s: a still scene the motion gate skips."""
    cap = cv2.VideoCapture(str(VTEST))
    ok, img = cap.read()
    cap.release()
    assert ok
    path = tmp / "still.avi"
    w = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, img.shape[1::-1])
    for _ in range(40):
        w.write(img)
    w.release()
    return path


@pytest.mark.slow
def test_pipeline_follows_the_motion_and_detect_switches(detector, tmp_path: Path) -> None:
    """The real pipeline on a still scene: motion ON skips it; motion OFF infers every frame;
    detect OFF infers none and still publishes each frame, with no boxes; back ON, the first
    frame is inferred and the gate skips again."""
    clip = still_clip(tmp_path)
    src = VideoFile(clip, pace=True, loop=True)
    src.open()
    switches = Switches(["hall"])
    gate = MotionGate(MotionConfig(force_interval=600.0))
    p = Pipeline(detector, [CameraSpec("hall", lambda: VideoFile(clip, pace=True, loop=True), src, gate)],
                 PipelineOptions(report_sinks=()), switches)
    seen: list[Result] = []
    p.add_result_listener(seen.append)
    stats = p.camera().stats

    def figures() -> tuple[int, int, int]:
        f = stats.figures(time.monotonic())
        return f["frames_inferred"], f["frames_skipped"], f["frames_published"]

    def after(n: int, published: int) -> tuple[int, int, int]:
        """The figures once `n` more frames were published."""
        deadline = time.monotonic() + 60
        while figures()[2] < published + n and time.monotonic() < deadline:
            time.sleep(0.05)
        return figures()

    p.start()
    try:
        gated = after(10, 0)
        switches.set("hall", "motion", False)
        time.sleep(0.2)  # the frame being decided on when the switch moved
        b0 = figures()
        ungated = after(10, b0[2])
        switches.set("hall", "detect", False)
        time.sleep(0.2)
        c0 = figures()
        i0 = len(seen)
        off = after(10, c0[2])
        off_results = seen[i0:]
        switches.set("hall", "motion", True)
        switches.set("hall", "detect", True)
        back = after(10, off[2])
    finally:
        p.stop()
        p.join(30.0)
    assert gated[0] == 1 and gated[1] >= 9, gated  # the first frame, then held
    assert ungated[0] - b0[0] >= 10 and ungated[1] == b0[1], (b0, ungated)  # every frame inferred
    assert off[0] == c0[0] and off[1] - c0[1] >= 10, (c0, off)  # none inferred, each published
    assert off_results and all(not r.detections and not r.held for r in off_results)
    assert back[0] == off[0] + 1 and back[1] - off[1] >= 9, (off, back)
    print(f"\nframes inferred/skipped/published: motion on {gated}, motion off {ungated}, "
          f"detect off {off}, both on again {back}")


class _Lane:
    """A camera as the scheduler sees it; what is passed through is noted."""

    def __init__(self, scheduler: Scheduler, name: str):
        self.name = name
        self.slot: LatestSlot[Frame] = LatestSlot(on_put=scheduler.arrived)
        self.min_interval_s = 0.0
        self.served_t = 0.0
        self.passed: list[int] = []
        scheduler.add(self)


def test_scheduler_passes_a_switched_off_camera_by_in_order() -> None:
    """Detection off: the camera's frames never reach the detector. The camera whose frame was
    just handed out may still have that frame's result waiting in the worker (published once
    the next frame is ready): its frames are passed through from the call after, never before
    that result."""
    switches = Switches(["a", "b"])
    scheduler: Scheduler[_Lane] = Scheduler(lambda lane: switches.on(lane.name, "detect"),
                                            lambda lane, frame: lane.passed.append(frame.index))
    a, b = _Lane(scheduler, "a"), _Lane(scheduler, "b")
    img = np.zeros((4, 4, 3), np.uint8)
    a.slot.put(Frame(0, 0.0, img))
    got = scheduler.next(0.0)
    assert got is not None and got[0] is a  # a's frame 0 in the detector
    switches.set("a", "detect", False)
    a.slot.put(Frame(1, 0.0, img))
    b.slot.put(Frame(0, 0.0, img))
    got = scheduler.next(0.0)  # asked while a's result waits
    assert got is not None and got[0] is b and a.passed == []
    assert scheduler.next(0.0) is None and a.passed == [1]  # b's turn published a's result first
    for i in (2, 3):
        a.slot.put(Frame(i, 0.0, img))
        assert scheduler.next(0.0) is None
    assert a.passed == [1, 2, 3] and not a.slot.full
