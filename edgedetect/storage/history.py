"""The event history over HTTP, on the viewer's server and under its token rules:

    GET    /events                          the page (static/events.html): review items
    GET    /api/reviews?camera=&label=&zone=&since=&until=&before=&limit=
                                            review items with their objects, newest first;
                                            `next` is the `before` of the following page
    GET    /api/reviews/<id>                one review item
    DELETE /api/reviews/<id>                delete it (its clip, boxes and objects)
    GET    /reviews/<id>/clip.mp4           its clip (one byte range with Range; ?download=1: as a download)
    GET    /reviews/<id>/boxes.json         each object's boxes over time
    GET    /api/events?camera=&label=&zone=&since=&until=&limit=    single objects, newest first,
                                            each naming its review item and clip
    GET    /api/events/<id>                 one event
    DELETE /api/events/<id>                 delete it (and its review item if it was the last object)
    GET    /events/<id>/snapshot.jpg        the best frame, boxes drawn
    GET    /events/<id>/crop.jpg            the object
    GET    /events/<id>/clip.mp4            the clip of an event stored with one of its own (as above)

No request names a file: the path gives an event id, checked against the id pattern and looked
up in the index, and one of three fixed file names; anything else is a 404 before the disk is
touched, and a file is opened without following links. Files are sent from disk as the client
takes them, never read whole into memory. `since` and `until` are wall-clock seconds since the
epoch. The list names the cameras, zones and labels to filter by (the zones and labels of every
camera). While the store cannot be used, the lists are empty and `record.reason` says why.
"""

from __future__ import annotations

import json
import math
import os
import re
from importlib import resources
from typing import Any, BinaryIO, Callable

from edgedetect.config import Config, camera_configs
from edgedetect.storage.ondisk import BOXES, CLIP, CROP, ID_RE, REVIEW_RE, SNAPSHOT
from edgedetect.storage.store import BOXES_MAX_BYTES, EventStore, event_json, review_json
from edgedetect.routes import FilePart, Request, Response

MAX_LIMIT = 1000
DEFAULT_LIMIT = 100
DEFAULT_PAGE = 24
TYPES = {SNAPSHOT: "image/jpeg", CROP: "image/jpeg", CLIP: "video/mp4", BOXES: "application/json"}


RANGE_RE = re.compile(r"bytes=(\d*)-(\d*)")


def ranged(req: Request, f: BinaryIO, size: int, ctype: str, headers: tuple[tuple[str, str], ...]) -> Response:
    """The open file `f` of `size` bytes, or the one byte range of it the request asks for (206;
    416 when it lies outside). Several ranges in one request are answered with the whole file,
    as RFC 9110 allows. The response owns `f`."""
    m = RANGE_RE.fullmatch(req.headers.get("range", "").strip())
    if m is None or (not m.group(1) and not m.group(2)):
        return Response(200, FilePart(f, 0, size), ctype, headers)
    if m.group(1):
        first = int(m.group(1))
        last = min(int(m.group(2)), size - 1) if m.group(2) else size - 1
    else:  # the last N bytes
        first, last = max(0, size - int(m.group(2))), size - 1
    if first >= size or last < first:
        return Response(416, FilePart(f, 0, 0), ctype, headers + (("Content-Range", f"bytes */{size}"),))
    return Response(206, FilePart(f, first, last - first + 1), ctype,
                    headers + (("Content-Range", f"bytes {first}-{last}/{size}"),))


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
        add_route("/api/reviews", self.list_reviews)
        add_route("/api/reviews/", self.one_review, ("GET", "DELETE"))
        add_route("/reviews/", self.review_file)
        add_route("/api/events", self.list_events)
        add_route("/api/events/", self.one_event, ("GET", "DELETE"))
        add_route("/events/", self.event_file)

    def _filters(self, req: Request, default_limit: int) -> tuple[dict[str, Any], Response | None]:
        """The query's filters, or a 400 naming the parameter and what was expected."""
        q = {k: v[-1] for k, v in req.query.items() if v}
        out: dict[str, Any] = {k: q.get(k) or None for k in ("camera", "label", "zone")}
        try:
            out["limit"] = int(q.get("limit", default_limit))
            out["since"] = float(q["since"]) if q.get("since") else None
            out["until"] = float(q["until"]) if q.get("until") else None
        except ValueError:
            return out, _error(400, "limit: expected an integer; since, until: expected seconds since the epoch")
        if not 0 <= out["limit"] <= MAX_LIMIT:
            return out, _error(400, f"limit: expected 0 to {MAX_LIMIT}")
        if any(v is not None and not math.isfinite(v) for v in (out["since"], out["until"])):
            return out, _error(400, "since, until: expected finite numbers")
        before = q.get("before")
        out["before"] = None
        if before:
            start, _, rid = before.partition("~")
            try:
                out["before"] = (float(start), rid)
            except ValueError:
                return out, _error(400, "before: expected the `next` of the previous page")
            if not math.isfinite(out["before"][0]) or not REVIEW_RE.fullmatch(rid):
                return out, _error(400, "before: expected the `next` of the previous page")
        return out, None

    def _lists(self) -> dict[str, Any]:
        return {"cameras": self.cameras, "zones": self.zones, "labels": self.labels, "record": self.stats()}

    def list_reviews(self, req: Request) -> Response:
        f, bad = self._filters(req, DEFAULT_PAGE)
        if bad is not None:
            return bad
        store = self.store()
        items = store.query_reviews(f["camera"], f["label"], f["zone"], f["since"], f["until"], f["before"],
                                    f["limit"] + 1) if store else []
        more = len(items) > f["limit"]
        items = items[:f["limit"]]
        last = items[-1] if items else None
        return _json(200, {
            "reviews": [review_json(r) for r in items],
            "count": len(items),
            "next": f"{last.start!r}~{last.id}" if more and last is not None else None,
            "total": store.count_reviews() if store else 0,
            **self._lists(),
        })

    def one_review(self, req: Request) -> Response:
        review_id = req.path[len("/api/reviews/"):]
        store = self.store()
        if store is None or not REVIEW_RE.fullmatch(review_id):
            return _error(404, "no such review item")
        if req.method == "DELETE":
            if store.delete_review(review_id):
                return _json(200, {"deleted": review_id})
            return _error(404, "no such review item")
        rv = store.get_review(review_id)
        if rv is None:
            return _error(404, "no such review item")
        return _json(200, review_json(rv))

    def review_file(self, req: Request) -> Response:
        parts = req.path[len("/reviews/"):].split("/")
        if len(parts) != 2 or not REVIEW_RE.fullmatch(parts[0]) or parts[1] not in (CLIP, BOXES):
            return _error(404, "not found")
        return self._file(req, parts[0], parts[1])

    def _file(self, req: Request, listed_id: str, name: str) -> Response:
        """A listed event's or review item's file, streamed from disk by the server; a clip with
        byte ranges, and as a download with ?download=1."""
        store = self.store()
        f = store.open(listed_id, name) if store else None
        if f is None:
            return _error(404, "not found")
        size = os.fstat(f.fileno()).st_size
        if name == BOXES and size > BOXES_MAX_BYTES:
            f.close()
            return _error(404, "not found")
        if name != CLIP:
            return Response(200, FilePart(f, 0, size), TYPES[name])
        headers: tuple[tuple[str, str], ...] = (("Accept-Ranges", "bytes"),)
        if req.query.get("download"):
            headers += (("Content-Disposition", f'attachment; filename="{listed_id}.mp4"'),)
        return ranged(req, f, size, TYPES[CLIP], headers)

    # --- routes (HTTP threads) -----------------------------------------------------------------

    def events_page(self, req: Request) -> Response:
        return Response(200, self.page, "text/html; charset=utf-8")

    def list_events(self, req: Request) -> Response:
        f, bad = self._filters(req, DEFAULT_LIMIT)
        if bad is not None:
            return bad
        store = self.store()
        events = store.query(f["label"], f["zone"], f["since"], f["until"], f["limit"], camera=f["camera"]) if store else []
        reviews = store.reviews_by_id(e.review for e in events if e.review) if store else {}
        return _json(200, {
            "events": [event_json(e, review=reviews.get(e.review or "")) for e in events],
            "count": len(events),
            "total": store.count() if store else 0,
            **self._lists(),
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
        return _json(200, event_json(ev, review=store.get_review(ev.review) if ev.review else None))

    def event_file(self, req: Request) -> Response:
        parts = req.path[len("/events/"):].split("/")
        if len(parts) != 2 or not ID_RE.fullmatch(parts[0]) or parts[1] not in TYPES:
            return _error(404, "not found")
        return self._file(req, parts[0], parts[1])


OFF_HINT = ("recording is off: to keep events with snapshots and clips, set [record] enabled = true (and dir, "
            "a folder of its own, on a USB drive for heavy use) in the config and restart the service, or run "
            "`edgedetect run --record`")


def _off_page() -> bytes:
    return """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>edgedetect events</title>
<style>body{background:#111;color:#ddd;font:15px/1.5 system-ui,sans-serif;max-width:46em;margin:3em auto;padding:0 1em}
pre{background:#222;padding:1em;border-radius:4px}a{color:#8cf}</style></head><body>
<h1>Recording is off</h1>
<p>This daemon does not keep events, so there is nothing to look back on yet.
To keep each event with its snapshot and clip, add this to the config
(<code>/etc/edgedetect/edgedetect.toml</code> for the service):</p>
<pre>[record]
enabled = true
dir = "/var/lib/edgedetect/events"   # a folder of its own; a USB drive for heavy use</pre>
<p>then restart it: <code>sudo systemctl restart edgedetect</code>.
From a terminal, <code>edgedetect run --record</code> does the same for one run.</p>
<p><a href="./">Back to the live view</a></p></body></html>""".encode()


def attach(hooks: Any) -> None:
    """With recording off: /events and the history's API say how to turn it on (not a bare 404)."""
    page = _off_page()

    def events_page(req: Request) -> Response:
        return Response(200, page, "text/html; charset=utf-8")

    def api(req: Request) -> Response:
        return _error(404, OFF_HINT)

    hooks.add_route("/events", events_page)
    for path in ("/api/reviews", "/api/reviews/", "/api/events", "/api/events/"):
        hooks.add_route(path, api)
    return None
