"""The HTTP sink: viewer page, MJPEG stream, snapshot, JSON API, health check.

Standard library only. Every stream client gets its own thread that always sends the newest
JPEG; a client that reads slowly skips frames (its own, nobody else's) and one that stops
reading is dropped after `client_timeout`. Nothing outside the package's own viewer page is
ever read from disk.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import socket
import threading
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from edgedetect.config import HttpConfig
from edgedetect.errors import UserError
from edgedetect.pipeline.publish import Publisher

log = logging.getLogger("edgedetect.sinks.viewer")

BOUNDARY = "edgedetect-frame"
ROUTES = {"/", "/index.html", "/stream.mjpg", "/snapshot.jpg", "/api/stats", "/api/detections", "/healthz"}



@dataclass(frozen=True, slots=True)
class Request:
    method: str  # GET, HEAD or DELETE
    path: str  # without the query
    query: dict[str, list[str]]


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


# An extension's route: a Request in, a Response out (on the HTTP server's thread).
Route = Callable[[Request], Response]


@dataclass(frozen=True, slots=True)
class RouteSpec:
    handler: Route
    methods: frozenset[str] = frozenset({"GET"})
    prefix: bool = False  # the path ends in "/" and matches everything below it


@dataclass
class Api:
    """What the server asks the daemon for."""

    stats: Callable[[], dict[str, Any]]
    detections: Callable[[], dict[str, Any]]
    healthy: Callable[[], tuple[bool, str]]


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64
    max_connections = 64  # one thread each; more are refused at once rather than piling up

    def __init__(self, *args: Any, **kw: Any):
        self._active = 0
        self._active_lock = threading.Lock()
        super().__init__(*args, **kw)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._active_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            try:
                request.sendall(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            except OSError:
                pass
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._active_lock:
                self._active -= 1


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ViewerServer:
    def __init__(self, cfg: HttpConfig, publisher: Publisher, api: Api):
        if not is_loopback(cfg.host) and not cfg.token:
            raise UserError(f"http.host = {cfg.host!r} serves the network: set http.token (or --token) so that "
                            "viewers must present it, or keep host = \"127.0.0.1\"")
        self.cfg = cfg
        self.publisher = publisher
        self.api = api
        self.stopping = threading.Event()
        self._viewers = 0
        self._viewers_lock = threading.Lock()
        self.routes: dict[str, RouteSpec] = {}  # added by extensions before start()
        self.page = resources.files("edgedetect.sinks").joinpath("static/index.html").read_bytes()
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        _Server.address_family = family
        try:
            self._httpd = _Server((cfg.host, cfg.port), _make_handler(self))
        except OSError as e:
            what = "in use" if e.errno in (98, 48) else (e.strerror or str(e))
            raise UserError(f"http: cannot listen on {cfg.host}:{cfg.port} ({what}); "
                            "choose another [http] port or stop the program using it") from None
        self._thread = threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def viewers(self) -> int:
        return self._viewers

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        self.publisher.close()
        self._httpd.shutdown()
        self._httpd.server_close()

    def join(self, timeout: float | None = None) -> None:
        self._thread.join(timeout)

    def add_viewer(self) -> bool:
        with self._viewers_lock:
            if self._viewers >= self.cfg.max_viewers:
                return False
            self._viewers += 1
            return True

    def remove_viewer(self) -> None:
        with self._viewers_lock:
            self._viewers -= 1

    def add_route(self, path: str, handler: Route, methods: tuple[str, ...] = ("GET",)) -> None:
        """A path of an extension's; one ending in "/" serves every path below it."""
        if path in ROUTES or path in self.routes:
            raise ValueError(f"http: route {path!r} is taken")
        self.routes[path] = RouteSpec(handler, frozenset(methods), path.endswith("/"))

    def find_route(self, path: str) -> RouteSpec | None:
        spec = self.routes.get(path)
        if spec is not None:
            return spec
        below = [p for p, s in self.routes.items() if s.prefix and path.startswith(p) and len(path) > len(p)]
        return self.routes[max(below, key=len)] if below else None

    def authorised(self, headers: Any, query: dict[str, list[str]]) -> bool:
        """With a token set, every client presents it, local ones too: a reverse proxy on the
        Pi would otherwise make every remote viewer look local."""
        if not self.cfg.token:
            return True
        given = query.get("token", [""])[0]
        auth = headers.get("Authorization", "")
        if auth.startswith("Bearer "):
            given = auth[7:].strip()
        given = headers.get("X-Edgedetect-Token", given)
        return hmac.compare_digest(given.encode(), self.cfg.token.encode())


def _make_handler(srv: ViewerServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgedetect"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        # Unparseable requests still get a status line (the stdlib would answer as HTTP/0.9).
        default_request_version = "HTTP/1.0"
        error_content_type = "text/plain; charset=utf-8"
        error_message_format = "%(code)d %(message)s\n"
        timeout = srv.cfg.client_timeout  # per socket: a client that stops sending or reading is dropped

        def log_message(self, fmt: str, *args: Any) -> None:  # access log only when debugging
            log.debug("%s %s", self.client_address[0], fmt % args)

        def _send(self, status: int, body: bytes, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            for k, v in (extra or {}).items():
                self.send_header(k, v)
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _error(self, status: HTTPStatus, extra: dict[str, str] | None = None) -> None:
            self.close_connection = True
            self._send(status, json.dumps({"error": status.phrase}).encode(), "application/json",
                       {"Connection": "close", **(extra or {})})

        def _route(self) -> tuple[str, dict[str, list[str]]] | None:
            parts = urlsplit(self.path)
            if parts.path not in ROUTES and srv.find_route(parts.path) is None:
                self._error(HTTPStatus.NOT_FOUND)
                return None
            query = parse_qs(parts.query)
            if not srv.authorised(self.headers, query):
                self._error(HTTPStatus.UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
                return None
            return parts.path, query

        def do_GET(self) -> None:
            routed = self._route()
            if routed is None:
                return
            path, query = routed
            if path in ("/", "/index.html"):
                self._send(200, srv.page, "text/html; charset=utf-8")
            elif path == "/stream.mjpg":
                self._stream()
            elif path == "/snapshot.jpg":
                _, jpg = srv.publisher.jpeg()
                if jpg:
                    self._send(200, jpg, "image/jpeg")
                else:
                    self._error(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "1"})
            elif path == "/api/stats":
                self._json(200, srv.api.stats())
            elif path == "/api/detections":
                self._json(200, srv.api.detections())
            elif path == "/healthz":
                ok, why = srv.api.healthy()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unhealthy", "reason": why})
            else:
                self._extension(path, query)

        do_HEAD = do_GET

        def _extension(self, path: str, query: dict[str, list[str]]) -> None:
            spec = srv.find_route(path)
            assert spec is not None
            method = "GET" if self.command == "HEAD" else self.command
            if method not in spec.methods:
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ", ".join(sorted(spec.methods | {"HEAD"}))})
                return
            r = spec.handler(Request(self.command, path, query))
            self._send(r.status, r.body, r.content_type, dict(r.headers))

        def do_DELETE(self) -> None:
            routed = self._route()
            if routed is None:
                return
            path, query = routed
            if path in ROUTES:
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": "GET, HEAD"})
                return
            self._extension(path, query)

        def _not_allowed(self) -> None:
            routed = self._route()
            if routed is not None:
                spec = srv.find_route(routed[0])
                allowed = sorted(spec.methods | {"HEAD"}) if spec else ["GET", "HEAD"]
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ", ".join(allowed)})

        do_POST = do_PUT = do_PATCH = do_OPTIONS = _not_allowed

        def _stream(self) -> None:
            if self.command == "HEAD":
                self._send(200, b"", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                return
            if not srv.add_viewer():
                self._error(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "5"})
                return
            try:
                self.send_response(200)
                self.send_header("Content-Type", f"multipart/x-mixed-replace; boundary={BOUNDARY}")
                self.send_header("Cache-Control", "no-store")
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                for jpg in srv.publisher.stream(srv.stopping):
                    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpg)}\r\n\r\n").encode()
                    self.wfile.write(head + jpg + b"\r\n")
                    self.wfile.flush()
            except (ConnectionError, TimeoutError, OSError):
                pass  # the viewer went away or stopped reading
            finally:
                srv.remove_viewer()

    return Handler
