"""The cameras' switches over MQTT, as Home Assistant expects: `ON`/`OFF` on
BASE/SWITCH/set (BASE/CAMERA/SWITCH/set with [cameras]), the state echoed, retained, on
BASE[/CAMERA]/SWITCH/state, and a Home Assistant switch for each.

Commands arrive on paho's thread. A command that cannot be followed (a payload other than ON or
OFF, a camera that does not exist) is logged once per topic, counted and ignored.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import TYPE_CHECKING, Mapping

from edgedetect.messaging.discovery import switch_discovery
from edgedetect.messaging.link import MqttLink
from edgedetect.messaging.topics import QOS_STATE, Topics

if TYPE_CHECKING:
    from edgedetect.switches import Switches

log = logging.getLogger("edgedetect.messaging.control")

LOGGED_TOPICS_MAX = 100  # topics whose bad commands are remembered as logged; beyond, only counted


class SwitchControl:
    """`cameras`: each camera's topics by its name (the daemon's own topics for the one camera
    without [cameras])."""

    def __init__(self, switches: Switches, link: MqttLink, daemon_topics: Topics, cameras: Mapping[str, Topics],
                 several: bool):
        self.switches = switches
        self.link = link
        self.cameras = dict(cameras)
        self._commands = {topics.switch_command(s): (name, s) for name, topics in self.cameras.items()
                          for s in switches.names}
        self.filters = daemon_topics.switch_filters(several, switches.names)
        self._lock = threading.Lock()
        self._logged: set[str] = set()
        self.accepted = 0
        self.rejected = 0

    def command(self, topic: str, payload: bytes) -> None:
        """One message on a command topic (paho's thread)."""
        target = self._commands.get(topic)
        if target is None:
            # Only the camera level can be unknown: the subscriptions name each switch.
            self._reject(topic, f"no camera {topic.split('/')[-3]!r} (expected one of "
                                f"{', '.join(sorted(self.cameras))})")
            return
        word = payload.decode("utf-8", "replace").strip().upper()
        if word not in ("ON", "OFF"):
            self._reject(topic, f"payload {payload[:40]!r} (expected ON or OFF)")
            return
        camera, switch = target
        if self.switches.set(camera, switch, word == "ON"):
            log.info("mqtt: %s of camera %s switched %s", switch, camera, word)
        with self._lock:
            self.accepted += 1
        self._publish_state(camera, switch)

    def resync(self, device: str, model: str, discovery: bool) -> None:
        """After every (re)connect: each camera's switches in discovery and their states."""
        for camera, topics in self.cameras.items():
            for switch in self.switches.names:
                if discovery:
                    for topic, config in switch_discovery(topics, device, model, switch):
                        self.link.publish(topic, json.dumps(config), QOS_STATE, retain=True)
                self._publish_state(camera, switch)

    def figures(self) -> dict[str, object]:
        with self._lock:
            out: dict[str, object] = {"commands": self.accepted, "commands_rejected": self.rejected}
        out["switched_off"] = [f"{cam}/{s}" for cam in self.cameras for s in self.switches.names
                               if not self.switches.on(cam, s)]
        out["switch_state_errors"] = self.switches.save_failures
        return out

    def _publish_state(self, camera: str, switch: str) -> None:
        state = "ON" if self.switches.on(camera, switch) else "OFF"
        self.link.publish(self.cameras[camera].switch_state(switch), state, QOS_STATE, retain=True)

    def _reject(self, topic: str, why: str) -> None:
        with self._lock:
            self.rejected += 1
            first = topic not in self._logged and len(self._logged) < LOGGED_TOPICS_MAX
            if first:
                self._logged.add(topic)
            last = first and len(self._logged) == LOGGED_TOPICS_MAX
        if first:
            log.warning("mqtt: command on %s ignored: %s%s", topic, why,
                        "; further bad commands on new topics are counted, not logged" if last else
                        "; further ones on this topic are counted, not logged")
