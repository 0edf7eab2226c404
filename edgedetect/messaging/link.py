"""The MQTT connection (paho): background connect and reconnect, bounded holding of messages,
and the figures reported under "mqtt" in /api/stats."""

from __future__ import annotations

import logging
import ssl
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from edgedetect.config import MqttConfig
from edgedetect.errors import UserError
from edgedetect.messaging.topics import OFFLINE, QOS_STATE, Topics

log = logging.getLogger("edgedetect.messaging.link")

RECONNECT_MIN_S = 1
RECONNECT_MAX_S = 30


@dataclass
class Figures:
    """The connection's and the events' figures under "mqtt" in /api/stats (the publisher adds the
    live objects and zone counts of its cameras)."""

    connected: bool = False
    connects: int = 0
    published: int = 0  # messages handed to the client (sent, or held until the broker is back)
    dropped: int = 0  # messages given up: broker away and queue full, or not worth queueing
    frames_dropped: int = 0  # results the tracker never saw (events thread behind)
    events_started: int = 0
    events_ended: int = 0
    started_by_label: dict[str, int] = field(default_factory=dict)
    ended_by_label: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {
            "connected": self.connected,
            "connects": self.connects,
            "messages_published": self.published,
            "messages_dropped": self.dropped,
            "frames_dropped": self.frames_dropped,
            "events_started": self.events_started,
            "events_ended": self.events_ended,
            "events_started_by_label": dict(self.started_by_label),
            "events_ended_by_label": dict(self.ended_by_label),
        }


class MqttLink:
    """The paho client: connects in the background, reconnects with backoff, never blocks the
    caller, and counts what it had to drop."""

    def __init__(self, mc: MqttConfig, topics: Topics, client_id: str, figures: Figures, lock: threading.Lock):
        self.mc = mc
        self.topics = topics
        self._figures = figures
        self._lock = lock
        self.resync = threading.Event()  # set on every (re)connect: re-send the current state
        self._logged_down = False
        self._filters: list[str] = []  # subscribed on every (re)connect
        self._on_command: Callable[[str, bytes], None] | None = None
        self._command_failed = False
        proto = mqtt.MQTTv5 if mc.protocol == "5" else mqtt.MQTTv311
        kw: dict[str, Any] = {} if proto == mqtt.MQTTv5 else {"clean_session": True}
        c = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=proto, **kw)
        if mc.username:
            c.username_pw_set(mc.username, mc.password or None)
        if mc.tls:
            try:
                c.tls_set(ca_certs=str(Path(mc.ca_file).expanduser()) if mc.ca_file else None,
                          cert_reqs=ssl.CERT_REQUIRED)
            except (ssl.SSLError, OSError) as e:
                raise UserError(f"mqtt.ca_file: {mc.ca_file or 'system store'} not usable for TLS ({e}); "
                                "expected a CA certificate (PEM)") from None
        c.will_set(topics.availability, OFFLINE, qos=QOS_STATE, retain=True)
        c.reconnect_delay_set(RECONNECT_MIN_S, RECONNECT_MAX_S)
        # Held messages are bounded; all of them count as in flight, so paho re-sends every one
        # after a reconnect.
        c.max_queued_messages_set(mc.queue_limit)
        c.max_inflight_messages_set(mc.queue_limit)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_connect_fail = self._on_connect_fail
        self.client = c

    def listen(self, filters: list[str], handler: Callable[[str, bytes], None]) -> None:
        """Before start: subscribe to `filters` on every (re)connect and hand each message to
        `handler(topic, payload)` on paho's thread."""
        self._filters = list(filters)
        self._on_command = handler
        self.client.on_message = self._on_message

    def start(self) -> None:
        # connect_async: the first attempt happens in paho's thread, so a broker that is down,
        # or a host name that takes long to resolve, never delays the daemon's start.
        self.client.connect_async(self.mc.host, self.mc.port, self.mc.keepalive)
        self.client.loop_start()

    def is_connected(self) -> bool:
        return self.client.is_connected()

    def publish(self, topic: str, payload: bytes | str, qos: int, retain: bool = False,
                hold: bool = True) -> bool:
        """Hand one message to the client; False when it was dropped. `hold=False`: do not
        keep it for a broker that is away (it is counted as dropped)."""
        if not hold and not self.client.is_connected():
            with self._lock:
                self._figures.dropped += 1
            return False
        try:
            info = self.client.publish(topic, payload, qos=qos, retain=retain)
            rc = info.rc
        except (ValueError, OSError, RuntimeError) as e:
            log.debug("publish to %s failed: %s", topic, e)
            rc = MQTTErrorCode.MQTT_ERR_UNKNOWN
        # A QoS 1 message answered NO_CONN is held by paho and sent after the reconnect.
        ok = rc == MQTTErrorCode.MQTT_ERR_SUCCESS or (qos > 0 and rc == MQTTErrorCode.MQTT_ERR_NO_CONN)
        with self._lock:
            if ok:
                self._figures.published += 1
            else:
                self._figures.dropped += 1
        return ok

    def close(self, timeout: float = 1.0) -> None:
        """Say offline (a clean disconnect sends no will), disconnect, stop paho's thread."""
        if self.client.is_connected():
            info = self.client.publish(self.topics.availability, OFFLINE, qos=QOS_STATE, retain=True)
            try:
                info.wait_for_publish(timeout)
            except (RuntimeError, ValueError):
                pass
        self.client.disconnect()
        self.client.loop_stop()

    # --- paho callbacks (paho's thread) ---------------------------------------------------------

    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        if reason.is_failure:
            if not self._logged_down:
                log.warning("mqtt: broker %s:%d refused the connection: %s (retrying)",
                            self.mc.host, self.mc.port, reason)
                self._logged_down = True
            return
        with self._lock:
            self._figures.connected = True
            self._figures.connects += 1
        self._logged_down = False
        log.info("mqtt: connected to %s:%d as %s", self.mc.host, self.mc.port, self.topics.base)
        if self._filters:  # a clean session starts with none
            client.subscribe([(f, QOS_STATE) for f in self._filters])
        self.resync.set()

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: Any, properties: Any) -> None:
        with self._lock:
            was = self._figures.connected
            self._figures.connected = False
        if was and reason.is_failure:
            log.warning("mqtt: lost the broker (%s); reconnecting with backoff", reason)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        # An exception here would end paho's thread, and with it the connection.
        try:
            if self._on_command is not None:
                self._on_command(msg.topic, msg.payload)
        except Exception:  # noqa: BLE001
            if not self._command_failed:
                self._command_failed = True
                log.exception("mqtt: a command on %s failed; ignored (further failures not logged)", msg.topic)

    def _on_connect_fail(self, client: mqtt.Client, userdata: Any) -> None:
        if not self._logged_down:
            log.warning("mqtt: broker %s:%d unreachable; retrying every %d-%d s in the background",
                        self.mc.host, self.mc.port, RECONNECT_MIN_S, RECONNECT_MAX_S)
            self._logged_down = True
