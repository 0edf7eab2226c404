"""The HTTP sink: viewer page, MJPEG stream, snapshot, JSON API, health check.

Standard library only. Every stream client gets its own thread that always sends the newest
JPEG; a client that reads slowly skips frames (its own, nobody else's) and one that stops
reading is dropped after `client_timeout`. A file a route hands over (a clip) goes from disk to
the socket as the client takes it, however long that lasts, while `client_timeout` bounds each
wait for the client to take more. Nothing outside the package's own viewer page is ever read
from disk.
"""

from __future__ import annotations

import errno
import hmac
import io
import json
import logging
import re
import selectors
import socket
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from importlib import resources
from typing import Any, Callable
from urllib.parse import parse_qs, urlsplit

from edgedetect import clock
from edgedetect.config import HttpConfig
from edgedetect.errors import UserError, shorten
from edgedetect.hosts import allowed_name, check_host, host_name, is_loopback, is_loopback_name, url_host
from edgedetect.pipeline.publish import Publisher
from edgedetect.routes import FilePart, Request, Route

log = logging.getLogger("edgedetect.sinks.viewer")

BOUNDARY = "edgedetect-frame"
ROUTES = {"/", "/index.html", "/stream.mjpg", "/snapshot.jpg", "/api/stats", "/api/detections", "/healthz",
          "/api/cameras"}
MAX_REFUSED_HOSTS_LOGGED = 32  # distinct refused Host names that get a log line; later ones are only counted
MAX_HEAD = 70_000  # bytes of request line and headers buffered before the handler judges them
POLL_S = 0.2  # accept loop: how late a stop or an expired deadline may be noticed
WRITE_CHUNK = 65536  # bytes of a body written at once: the client timeout bounds each write
UNSENT_LOWAT = 131072  # a file's bytes the kernel holds unsent for a client before the next wait



@dataclass(frozen=True, slots=True)
class RouteSpec:
    handler: Route
    methods: frozenset[str] = frozenset({"GET"})
    prefix: bool = False  # the path ends in "/" and matches everything below it


@dataclass
class Api:
    """What the server asks the daemon for."""

    stats: Callable[[], dict[str, Any]]
    healthy: Callable[[], tuple[bool, str]]


@dataclass
class CameraView:
    """What the server serves of one camera, under /cameras/NAME/ (the first camera also at the
    top-level paths a one-camera viewer has always used)."""

    publisher: Publisher
    stats: Callable[[], dict[str, Any]]  # the detector's figures and this camera's, flat
    detections: Callable[[], dict[str, Any]]
    healthy: Callable[[], tuple[bool, str]]
    info: Callable[[], dict[str, Any]]  # its entry in /api/cameras


CAMERA_PATH = re.compile(r"/cameras/([A-Za-z0-9_-]{1,64})(/.*)?")
CAMERA_ROUTES = {"/", "/index.html", "/stream.mjpg", "/snapshot.jpg", "/api/stats", "/api/detections", "/healthz",
          "/api/cameras"}


class _Pending:
    """A connection still sending its request head: no thread yet, only a buffer."""

    __slots__ = ("sock", "addr", "head", "deadline")

    def __init__(self, sock: socket.socket, addr: Any, deadline: float):
        self.sock, self.addr, self.head, self.deadline = sock, addr, bytearray(), deadline


def _head_complete(head: bytearray) -> bool:
    # The blank line that ends the header block (CRLF or bare LF line ends, as the stdlib
    # parser accepts both); a head too long to be valid goes on, so the handler answers 414 or 431.
    return b"\n\r\n" in head or b"\n\n" in head or len(head) >= MAX_HEAD


class _Server(HTTPServer):
    """Binds and listens like HTTPServer; the accept loop is its own.

    A connection gets a thread only once its whole request head has arrived. Until then it is
    one of at most `max_pending` buffers that one loop reads without blocking, under a deadline
    for the whole head (not per read: a client that sends a header line every few seconds never
    trips a per-read timeout). When the pending buffers are full, a new connection pushes out the
    oldest of the client address that holds the most of them. So connections that send slowly or
    not at all hold no thread and cannot keep out a client that sends its request at once, and
    the threads (`max_connections`) go only to complete requests: with a token, those that
    present it, as the others are answered 401 in microseconds.
    """

    allow_reuse_address = True
    request_queue_size = 128
    max_connections = 64  # threads: complete requests being answered and streams
    max_pending = 16  # connections still sending their request head (no thread each)

    def __init__(self, address: Any, handler: Any, family: int, request_timeout: float):
        self.address_family = family
        self.request_timeout = request_timeout
        self._active = 0
        self._lock = threading.Lock()
        self._pending: dict[socket.socket, _Pending] = {}  # oldest first
        self._stop = threading.Event()
        self._stopped = threading.Event()
        self.dropped = {"expired": 0, "pushed_out": 0, "refused": 0}
        super().__init__(address, handler)

    @property
    def pending(self) -> int:
        return len(self._pending)

    @property
    def active(self) -> int:
        return self._active

    def serve(self) -> None:
        sel = selectors.DefaultSelector()
        self.socket.setblocking(False)
        sel.register(self.socket, selectors.EVENT_READ, None)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(POLL_S):
                    if key.data is None:
                        self._accept(sel)
                    else:
                        self._read(sel, key.data)
                now = clock.now()
                for p in [p for p in self._pending.values() if p.deadline <= now]:
                    self.dropped["expired"] += 1
                    self._drop(sel, p)
        finally:
            for p in list(self._pending.values()):
                self._drop(sel, p)
            sel.close()
            self._stopped.set()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        if self._started:
            self._stopped.wait(timeout)

    _started = False

    def _accept(self, sel: selectors.BaseSelector) -> None:
        for _ in range(self.request_queue_size):
            try:
                sock, addr = self.socket.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno in (errno.EMFILE, errno.ENFILE) and self._pending:
                    self.dropped["pushed_out"] += 1
                    self._drop(sel, self._victim())  # free a descriptor for the next one
                else:
                    time.sleep(POLL_S / 4)  # out of descriptors with nothing to free: do not spin
                return
            sock.setblocking(False)
            self._make_room(sel)
            p = _Pending(sock, addr, clock.now() + self.request_timeout)
            self._pending[sock] = p
            sel.register(sock, selectors.EVENT_READ, p)
            self._read(sel, p)  # the request often comes with the connection

    def _make_room(self, sel: selectors.BaseSelector) -> None:
        """Below max_pending again: the victim's socket is read once more first, since a request
        that arrived meanwhile (a viewer among many half-open connections from its own address)
        is served, not pushed out."""
        while len(self._pending) >= self.max_pending:
            victim = self._victim()
            self._read(sel, victim)
            if victim.sock in self._pending:
                self.dropped["pushed_out"] += 1
                self._drop(sel, victim)

    def _victim(self) -> _Pending:
        """The oldest pending connection of the address that holds the most of them."""
        counts: dict[Any, int] = {}
        for p in self._pending.values():
            counts[p.addr[0]] = counts.get(p.addr[0], 0) + 1
        most = max(counts.values())
        return next(p for p in self._pending.values() if counts[p.addr[0]] == most)

    def _drop(self, sel: selectors.BaseSelector, p: _Pending) -> None:
        self._pending.pop(p.sock, None)
        try:
            sel.unregister(p.sock)
        except (KeyError, ValueError):
            pass
        p.sock.close()

    def _read(self, sel: selectors.BaseSelector, p: _Pending) -> None:
        try:
            chunk = p.sock.recv(MAX_HEAD)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            chunk = b""
        if not chunk:
            self._drop(sel, p)
            return
        p.head += chunk
        if not _head_complete(p.head):
            return
        self._pending.pop(p.sock)
        sel.unregister(p.sock)
        with self._lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            self.dropped["refused"] += 1
            try:
                p.sock.send(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nRetry-After: 1\r\n"
                            b"Connection: close\r\n\r\n")
            except OSError:
                pass
            p.sock.close()
            return
        try:
            threading.Thread(target=self._serve_one, args=(p,), name="http-client", daemon=True).start()
        except RuntimeError:  # no thread to be had (TasksMax)
            with self._lock:
                self._active -= 1
            p.sock.close()

    def _serve_one(self, p: _Pending) -> None:
        try:
            p.sock.setblocking(True)
            self.RequestHandlerClass(p.sock, p.addr, self, bytes(p.head), p.deadline)
        except OSError as e:
            log.debug("%s: connection error (%s)", p.addr[0], e)
        except Exception:  # noqa: BLE001 - a bug in one request must not end the server
            log.exception("http: request from %s failed", p.addr[0])
        finally:
            self.shutdown_request(p.sock)
            with self._lock:
                self._active -= 1


class _HeadReader(io.RawIOBase):
    """The request's input for the handler: the head the loop already read, then the socket,
    whose reads share one deadline while a deadline is set."""

    def __init__(self, sock: socket.socket, head: bytes, timeout: float, deadline: float | None):
        self._sock = sock
        self._head = memoryview(head)
        self._timeout = timeout
        self.deadline = deadline

    def readable(self) -> bool:
        return True

    def readinto(self, b: Any) -> int:
        if self._head:
            n = min(len(b), len(self._head))
            b[:n] = self._head[:n]
            self._head = self._head[n:]
            return n
        if self.deadline is not None:
            left = self.deadline - clock.now()
            if left <= 0:
                raise TimeoutError("request head not complete within the deadline")
            self._sock.settimeout(min(left, self._timeout))
        return self._sock.recv_into(b)


def redact(text: str, token: str = "") -> str:
    """`text` (a request line, a log or error message) without the access token: the value of
    any token= query parameter, and the configured token wherever it appears."""
    text = _TOKEN_PARAM.sub(r"\1<redacted>", text)
    if len(token) >= 4:  # a shorter one would blot out ordinary text (and is no secret anyway)
        text = text.replace(token, "<redacted>")
    return text


_TOKEN_PARAM = re.compile(r"(?i)((?:^|[?&;])token=)[^&;\s'\"]*")


class ViewerServer:
    def __init__(self, cfg: HttpConfig, api: Api, cameras: dict[str, CameraView]):
        check_host(cfg.host)
        if not is_loopback(cfg.host) and not cfg.token:
            raise UserError(f"http.host = {cfg.host!r} serves the network: set http.token in the config, or give "
                            "--token-file FILE or the EDGEDETECT_TOKEN environment variable, so that viewers must "
                            "present it; or keep host = \"127.0.0.1\"")
        self.cfg = cfg
        self.api = api
        self.cameras = cameras
        self.first = next(iter(cameras.values()))  # what the top-level paths serve
        self.stopping = threading.Event()
        self._viewers = 0
        self._viewers_lock = threading.Lock()
        self.routes: dict[str, RouteSpec] = {}  # added by extensions before start()
        self.refused_hosts = 0  # requests answered 403 for their Host
        self._hosts_logged: set[str] = set()
        self._hosts_lock = threading.Lock()
        static = resources.files("edgedetect.sinks").joinpath("static")
        self.page = static.joinpath("index.html").read_bytes()
        self.grid = static.joinpath("grid.html").read_bytes() if len(cameras) > 1 else self.page
        family = socket.AF_INET6 if ":" in cfg.host else socket.AF_INET
        try:
            self._httpd = _Server((cfg.host, cfg.port), _make_handler(self), family, cfg.client_timeout)
        except OSError as e:
            what = "in use" if e.errno in (98, 48) else (e.strerror or str(e))
            raise UserError(f"http: cannot listen on {url_host(cfg.host)}:{cfg.port} ({what}); "
                            "choose another [http] port or stop the program using it") from None
        self._thread = threading.Thread(target=self._httpd.serve, name="http", daemon=True)

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    @property
    def viewers(self) -> int:
        return self._viewers

    @property
    def connections(self) -> dict[str, int]:
        """Requests being answered (threads), connections still sending their request, and
        connections dropped since start: head not complete in time, pushed out, refused (503);
        requests refused (403) for their Host."""
        return {"active": self._httpd.active, "pending": self._httpd.pending, **self._httpd.dropped,
                "wrong_host": self.refused_hosts}

    def start(self) -> None:
        self._httpd._started = True
        self._thread.start()

    def stop(self) -> None:
        self.stopping.set()
        for view in self.cameras.values():
            view.publisher.close()
        self._httpd.stop()
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

    def camera_path(self, path: str) -> bool:
        """/cameras/NAME/ and the paths below it that a camera serves."""
        m = CAMERA_PATH.fullmatch(path)
        return bool(m and m.group(1) in self.cameras and (m.group(2) or "/") in CAMERA_ROUTES)

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
        scheme, _, credentials = headers.get("Authorization", "").strip().partition(" ")
        if scheme.lower() == "bearer":  # auth schemes are case-insensitive (RFC 7235 2.1)
            given = credentials.strip()
        given = headers.get("X-Edgedetect-Token", given)
        return hmac.compare_digest(given.encode(), self.cfg.token.encode())

    def foreign_host(self, headers: Any) -> str | None:
        """The Host of a request that must not be served, else None.

        Without a token, a page whose DNS name an attacker rebinds to 127.0.0.1 would reach this
        server with the browser's blessing, under the attacker's name: only names of this machine
        and those of [http] allowed_hosts are served. A request without a Host header is: every
        browser sends one, so such a request comes from a program that can connect to loopback
        anyway. With a token, the token protects, and viewers use any LAN name or address."""
        if self.cfg.token:
            return None
        for value in headers.get_all("Host") or ():  # a second Host header must pass too
            name = host_name(value)
            if not (is_loopback_name(name) or name in {allowed_name(h) for h in self.cfg.allowed_hosts}):
                self._count_foreign(value)
                return value
        return None

    def _count_foreign(self, value: str) -> None:
        """Counted every time; logged once per name, for the first names only (a page can make
        a browser send any number of them)."""
        name = host_name(value) or value
        with self._hosts_lock:
            self.refused_hosts += 1
            if name in self._hosts_logged or len(self._hosts_logged) > MAX_REFUSED_HOSTS_LOGGED:
                return
            self._hosts_logged.add(name)
            over = len(self._hosts_logged) > MAX_REFUSED_HOSTS_LOGGED
        if over:
            log.warning("http: refused Host names beyond the first %d are counted, not logged",
                        MAX_REFUSED_HOSTS_LOGGED)
        else:
            log.warning("http: refused requests for Host %s: not this machine (a DNS rebinding page?); if it "
                        "is a name of this machine, add it to [http] allowed_hosts", shorten(repr(value), 100))


def _make_handler(srv: ViewerServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "edgedetect"
        sys_version = ""
        protocol_version = "HTTP/1.1"
        # Unparseable requests still get a status line (the stdlib would answer as HTTP/0.9).
        default_request_version = "HTTP/1.0"
        error_content_type = "text/plain; charset=utf-8"
        error_message_format = "%(code)d %(message)s\n"
        timeout = srv.cfg.client_timeout  # per socket operation, once the request head is in

        def __init__(self, request: Any, client_address: Any, server: Any, head: bytes = b"",
                     deadline: float | None = None):
            self._head, self._deadline = head, deadline
            super().__init__(request, client_address, server)

        def setup(self) -> None:
            super().setup()
            self.rfile.close()
            self._reader = _HeadReader(self.connection, self._head, self.timeout, self._deadline)
            self.rfile = io.BufferedReader(self._reader)

        def parse_request(self) -> bool:
            ok = super().parse_request()
            # The head is in (or refused): the whole-request deadline is over, and reads and
            # writes from here on have the per-operation timeout (a viewer that stops reading).
            self._reader.deadline = None
            self.connection.settimeout(self.timeout)
            return ok

        def log_message(self, fmt: str, *args: Any) -> None:  # access log only when debugging
            log.debug("%s %s", self.client_address[0], shorten(redact(fmt % args, srv.cfg.token), 200))

        def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
            # The stdlib puts the request line into the status line and the body of a 400.
            super().send_error(code, None if message is None else redact(message, srv.cfg.token), explain)

        def _send(self, status: int, body: bytes | FilePart, ctype: str, extra: dict[str, str] | None = None) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(body.length if isinstance(body, FilePart) else len(body)))
            self.send_header("Cache-Control", "no-store")
            # One request per connection: an idle keep-alive connection would hold a thread.
            extra = {"Connection": "close", **(extra or {})}
            for k, v in extra.items():
                self.send_header(k, v)
            self.end_headers()
            if self.command == "HEAD":
                return
            if isinstance(body, FilePart):
                # sendfile(2): the kernel copies from the page cache, so a download costs no
                # memory here. The socket's timeout bounds each wait for room, not the whole
                # file; with few bytes queued unsent, room comes each time the client reads a
                # little, so a slow client is not taken for one that stopped reading.
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NOTSENT_LOWAT, UNSENT_LOWAT)
                sent = self.connection.sendfile(body.file, body.offset, body.length) if body.length else 0
                if sent < body.length:
                    log.debug("%s: file ended after %d of %d bytes", self.client_address[0], sent, body.length)
                return
            view = memoryview(body)
            for i in range(0, len(view), WRITE_CHUNK):
                self.wfile.write(view[i:i + WRITE_CHUNK])

        def _json(self, status: int, obj: Any) -> None:
            self._send(status, json.dumps(obj).encode(), "application/json")

        def _error(self, status: HTTPStatus, extra: dict[str, str] | None = None) -> None:
            self.close_connection = True
            self._send(status, json.dumps({"error": status.phrase}).encode(), "application/json",
                       {"Connection": "close", **(extra or {})})

        def _route(self) -> tuple[str, dict[str, list[str]]] | None:
            parts = urlsplit(self.path)
            query = parse_qs(parts.query)
            # The token first: without it, a path that exists and one that does not look the
            # same (401), so nobody finds out which routes an extension added.
            if not srv.authorised(self.headers, query):
                self._error(HTTPStatus.UNAUTHORIZED, {"WWW-Authenticate": "Bearer"})
                return None
            host = srv.foreign_host(self.headers)
            if host is not None:
                self.close_connection = True
                self._send(HTTPStatus.FORBIDDEN, (
                    f"403 Host {shorten(repr(host), 100)} is not allowed: without [http] token only localhost "
                    "and loopback addresses are served; add the name to [http] allowed_hosts\n").encode(),
                    "text/plain; charset=utf-8", {"X-Content-Type-Options": "nosniff"})
                return None
            if parts.path not in ROUTES and srv.find_route(parts.path) is None and not srv.camera_path(parts.path):
                self._error(HTTPStatus.NOT_FOUND)
                return None
            return parts.path, query

        def do_GET(self) -> None:
            routed = self._route()
            if routed is None:
                return
            path, query = routed
            m = CAMERA_PATH.fullmatch(path)
            if m and m.group(1) in srv.cameras and (m.group(2) or "/") in CAMERA_ROUTES:
                self._camera(srv.cameras[m.group(1)], m.group(2) or "", srv.page)
            elif m and m.group(1) in srv.cameras and not m.group(2):
                self._send(301, b"", "text/plain", {"Location": path + "/"})
            elif path == "/api/stats":
                self._json(200, srv.api.stats())
            elif path == "/api/cameras":
                self._json(200, {"cameras": [dict(name=name, **view.info()) for name, view in srv.cameras.items()]})
            elif path == "/healthz":
                ok, why = srv.api.healthy()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unhealthy", "reason": why})
            elif path in CAMERA_ROUTES:
                self._camera(srv.first, path, srv.grid)
            else:
                self._extension(path, query)

        def _camera(self, view: CameraView, path: str, page: bytes) -> None:
            if path in ("", "/", "/index.html"):
                self._send(200, page, "text/html; charset=utf-8")
            elif path == "/stream.mjpg":
                self._stream(view.publisher)
            elif path == "/snapshot.jpg":
                _, jpg = view.publisher.jpeg()
                if jpg:
                    self._send(200, jpg, "image/jpeg")
                else:
                    self._error(HTTPStatus.SERVICE_UNAVAILABLE, {"Retry-After": "1"})
            elif path == "/api/stats":
                self._json(200, view.stats())
            elif path == "/api/detections":
                self._json(200, view.detections())
            elif path == "/healthz":
                ok, why = view.healthy()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unhealthy", "reason": why})

        do_HEAD = do_GET

        def _extension(self, path: str, query: dict[str, list[str]]) -> None:
            spec = srv.find_route(path)
            assert spec is not None
            method = "GET" if self.command == "HEAD" else self.command
            if method not in spec.methods:
                self._error(HTTPStatus.METHOD_NOT_ALLOWED, {"Allow": ", ".join(sorted(spec.methods | {"HEAD"}))})
                return
            r = spec.handler(Request(self.command, path, query, {k.lower(): v for k, v in self.headers.items()}))
            try:
                self._send(r.status, r.body, r.content_type, dict(r.headers))
            finally:  # also after HEAD, a client gone, a timeout
                if isinstance(r.body, FilePart):
                    r.body.file.close()

        def do_DELETE(self) -> None:
            routed = self._route()
            if routed is None:
                return
            path, query = routed
            if path in ROUTES or srv.camera_path(path):
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

        def _stream(self, publisher: Publisher) -> None:
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
                for jpg in publisher.stream(srv.stopping):
                    head = (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\n"
                            f"Content-Length: {len(jpg)}\r\n\r\n").encode()
                    self.wfile.write(head + jpg + b"\r\n")
                    self.wfile.flush()
            except (ConnectionError, TimeoutError, OSError):
                pass  # the viewer went away or stopped reading
            finally:
                srv.remove_viewer()

    return Handler
