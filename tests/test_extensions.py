"""Extension hooks: an extension is wanted by its config, a missing optional dependency is named in
the log, and one sink's exception stops neither the pipeline nor the other sinks."""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest

from edgedetect.config import Config
from edgedetect.extensions import Registration, attach_all
from edgedetect.frames import Frame, Result
from edgedetect.pipeline.listeners import Listeners
from edgedetect.pipeline.publish import Publisher
from edgedetect.pipeline.state import SourceState, SourceStatus
from edgedetect.pipeline.stats import CameraStats
from fakehooks import make_hooks


def test_missing_optional_dependency_is_named_in_the_log(tmp_path, monkeypatch, caplog):
    (tmp_path / "edgedetect_test_needs_dep.py").write_text("import no_such_dependency_xyz\n")
    (tmp_path / "edgedetect_test_ok.py").write_text("CALLS = []\ndef attach(hooks):\n    CALLS.append(hooks)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = (Registration("edgedetect_test_needs_dep", lambda c: True, "frobnicator (pip install frob)"),
                Registration("edgedetect_test_ok", lambda c: True, ""),
                Registration("edgedetect_test_unwanted", lambda c: False, ""))
    hooks, _ = make_hooks(Config())
    with caplog.at_level(logging.WARNING):
        attached = attach_all(hooks, registry)
    import edgedetect_test_ok  # noqa: E402 - made above

    assert attached == [] and edgedetect_test_ok.CALLS == [hooks]  # the next one still attached
    assert "edgedetect_test_unwanted" not in sys.modules  # not wanted: never imported
    warned = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "edgedetect_test_needs_dep" in warned[0] and "frobnicator (pip install frob)" in warned[0]


def test_a_missing_extension_module_is_a_bug_not_a_warning(monkeypatch):
    hooks, _ = make_hooks(Config())
    with pytest.raises(ModuleNotFoundError):
        attach_all(hooks, (Registration("edgedetect.sinks.no_such_sink", lambda c: True, ""),))


def test_a_failing_result_listener_stops_no_other(caplog):
    pub = Publisher(CameraStats())
    seen = []

    def broken(result: Result) -> None:
        raise RuntimeError("sink exploded")

    pub.add_listener(broken)
    pub.add_listener(seen.append)
    img = np.zeros((8, 8, 3), np.uint8)
    with caplog.at_level(logging.ERROR):
        for i in range(5):
            pub.publish(Result(Frame(i, 0.0, img)))
    assert [r.frame.index for r in seen] == [0, 1, 2, 3, 4]
    assert pub.listener_errors == 5
    assert sum("sink exploded" in (r.exc_text or "") or "failed" in r.getMessage() for r in caplog.records) == 1


def test_a_failing_frame_listener_stops_no_other():
    listeners: Listeners[Frame] = Listeners("frame listener")
    seen = []
    listeners.add(lambda f: 1 / 0)
    listeners.add(seen.append)
    img = np.zeros((8, 8, 3), np.uint8)
    for i in range(3):
        listeners(Frame(i, 0.0, img))
    assert len(seen) == 3 and listeners.errors == 3


def test_frames_and_results_are_immutable():
    img = np.zeros((8, 8, 3), np.uint8)
    frame = Frame(0, 0.0, img)
    with pytest.raises(ValueError):
        frame.image[0, 0] = 255
    view = np.zeros((16, 16, 3), np.uint8)[4:12, 4:12]  # a view of someone else's array is copied
    f2 = Frame(1, 0.0, view)
    assert not f2.image.flags.writeable and view.flags.writeable
    result = Result(frame, [])
    with pytest.raises(AttributeError):
        result.detections = ()  # type: ignore[misc]
    assert isinstance(result.detections, tuple)


def test_source_state_moves_only_along_the_diagram():
    s = SourceStatus("cam")
    assert s.state is SourceState.STARTING
    assert s.move(SourceState.RUNNING) and not s.move(SourceState.RUNNING)
    assert s.move(SourceState.RECONNECTING) and s.move(SourceState.RUNNING) and s.move(SourceState.ENDED)
    with pytest.raises(ValueError, match="ended -> reconnecting"):
        s.move(SourceState.RECONNECTING)
    s.move(SourceState.RUNNING)
    s.move(SourceState.FAILED)
    with pytest.raises(ValueError):
        s.move(SourceState.RUNNING)  # failed is final: systemd restarts the service
    assert s.state == "failed"  # a str enum: JSON and the log line show the word
