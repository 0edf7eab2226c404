"""GET /api/zones: the zones and masks for the live viewer's overlay (drawn with a toggle)."""

from __future__ import annotations

import json
from typing import Any

from edgedetect.routes import Request, Response
from edgedetect.tracking.zones import Scene


def attach(hooks: Any) -> None:
    """The route only; nothing else runs."""
    body = json.dumps(Scene.from_config(hooks.cfg).as_json()).encode()

    def zones_route(req: Request) -> Response:
        return Response(200, body, "application/json")

    hooks.add_route("/api/zones", zones_route)
    return None
