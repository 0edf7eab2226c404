"""The event history over HTTP, on the viewer's server and under its token rules:

    GET    /events                          the page (static/events.html)
    GET    /api/events?camera=&label=&zone=&since=&until=&limit=    JSON, newest first
    GET    /api/events/<id>                 one event
    DELETE /api/events/<id>                 delete it (its files and its row)
    GET    /events/<id>/snapshot.jpg        the best frame, boxes drawn
    GET    /events/<id>/crop.jpg            the object
    GET    /events/<id>/clip.mp4            the clip

No request names a file: the path gives an event id, checked against the id pattern and looked
up in the index, and one of three fixed file names; anything else is a 404 before the disk is
touched, and a file is opened without following links. `since` and `until` are wall-clock
seconds since the epoch. The list names the cameras, zones and labels to filter by (the zones
and labels of every camera). While the store cannot be used, the lists are empty and
`record.reason` says why.
"""

from __future__ import annotations

import json
import math
from importlib import resources
from typing import Any, Callable

from edgedetect.config import Config, camera_configs
from edgedetect.storage.ondisk import CLIP, CROP, ID_RE, SNAPSHOT
from edgedetect.storage.store import EventStore, event_json
from edgedetect.routes import Request, Response

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
TYPES = {SNAPSHOT: "image/jpeg", CROP: "image/jpeg", CLIP: "video/mp4"}


def _json(status: int, obj: Any) -> Response:
    return Response(status, json.dumps(obj).encode(), "application/json")


def _error(status: int, message: str) -> Response:
    return _json(status, {"error": message})


class History:
    def __init__(self, store: Callable[[], EventStore | None], stats: Callable[[], dict[str, Any]], cfg: Config):
        self.store = store  # the store in use now (None while it cannot be opened)
        self.stats = stats
        self.cfg = cfg
        self.page = resources.files("edgedetect.storage").joinpath("static/events.html").read_bytes()
        cameras = camera_configs(cfg)
        self.cameras = [name for name, _ in cameras]
        self.zones = list(dict.fromkeys(z.name for _, c in cameras for z in c.zones))
        self.labels = sorted({label for _, c in cameras if c.record.enabled for label in c.record.labels})

    def register(self, add_route: Callable[..., None]) -> None:
        add_route("/events", self.events_page)
        add_route("/api/events", self.list_events)
        add_route("/api/events/", self.one_event, ("GET", "DELETE"))
        add_route("/events/", self.event_file)

    # --- routes (HTTP threads) -----------------------------------------------------------------

    def events_page(self, req: Request) -> Response:
        return Response(200, self.page, "text/html; charset=utf-8")

    def list_events(self, req: Request) -> Response:
        q = {k: v[-1] for k, v in req.query.items() if v}
        try:
            limit = int(q.get("limit", DEFAULT_LIMIT))
            since = float(q["since"]) if q.get("since") else None
            until = float(q["until"]) if q.get("until") else None
        except ValueError:
            return _error(400, "limit: expected an integer; since, until: expected seconds since the epoch")
        if not 0 <= limit <= MAX_LIMIT:
            return _error(400, f"limit: expected 0 to {MAX_LIMIT}")
        if any(v is not None and not math.isfinite(v) for v in (since, until)):
            return _error(400, "since, until: expected finite numbers")
        store = self.store()
        events = store.query(q.get("label") or None, q.get("zone") or None, since, until, limit,
                             camera=q.get("camera") or None) if store else []
        return _json(200, {
            "events": [event_json(e) for e in events],
            "count": len(events),
            "total": store.count() if store else 0,
            "cameras": self.cameras,
            "zones": self.zones,
            "labels": self.labels,
            "record": self.stats(),
        })

    def one_event(self, req: Request) -> Response:
        event_id = req.path[len("/api/events/"):]
        store = self.store()
        if store is None or not ID_RE.fullmatch(event_id):
            return _error(404, "no such event")
        if req.method == "DELETE":
            if store.delete(event_id):
                return _json(200, {"deleted": event_id})
            return _error(404, "no such event")
        ev = store.get(event_id)
        if ev is None:
            return _error(404, "no such event")
        return _json(200, event_json(ev))

    def event_file(self, req: Request) -> Response:
        parts = req.path[len("/events/"):].split("/")
        if len(parts) != 2 or not ID_RE.fullmatch(parts[0]) or parts[1] not in TYPES:
            return _error(404, "not found")
        store = self.store()
        f = store.open(parts[0], parts[1]) if store else None
        if f is None:
            return _error(404, "not found")
        with f:
            body = f.read()
        return Response(200, body, TYPES[parts[1]])
