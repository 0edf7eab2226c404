"""MJPEG over HTTP (multipart/x-mixed-replace), read by ourselves rather than by FFmpeg.

FFmpeg's mpjpeg demuxer (OpenCV's backend for http:// URLs) drops the whole connection on one
corrupt part or one wrong Content-Length, and when the camera changes resolution mid-stream it
keeps scaling to the first size: a mosaic, then a frozen picture. Here each part is decoded on
its own with `decode.decode`, so:

- a corrupt part (not a JPEG, cut short, undecodable) is skipped and counted (`on_corrupt`,
  shown as frames_corrupt), and the connection is kept;
- a part whose Content-Length is wrong is found by its end not being a JPEG's end, or by the
  next boundary turning up inside it; the reader then takes the part up to the next boundary
  (resynchronising there) and says so once;
- each part has its own size: a size change is logged once, and frames carry the new size;
- every read is bounded: socket timeouts, a deadline for a good frame, caps on header and part
  sizes; `interrupt()` shuts the socket down, so a blocked read returns at once;
- the search for a part's end goes on from where the previous chunk's search stopped, so each
  byte received is examined a bounded number of times whatever the camera sends (`scanned`).

A server that answers with anything other than 200 and a multipart body (HLS, MP4 over HTTP,
a redirect, digest authentication) is handed to FFmpeg (stream.NetworkStream, which copies its
H.264 into clips).
"""

from __future__ import annotations

import base64
import logging
import re
import socket
import ssl
import threading
from urllib.parse import unquote, urlsplit

import numpy as np

from edgedetect import clock
from edgedetect.errors import SourceError
from edgedetect.sources.base import Capture, redact
from edgedetect.sources.decode import BadImage, decode, jpeg_segments
from edgedetect.sources.stream import NetworkStream

log = logging.getLogger("edgedetect.sources")

TIMEOUT_S = 5.0  # connect, each socket read, and the longest wait for a good frame
MAX_HEADER_BYTES = 64 * 1024  # the HTTP response's headers, a part's, a JPEG's segments before its scan
MAX_PART_BYTES = 16 * 2**20  # one part (a 4K MJPEG frame is 1-3 MB)
STREAM_MAX_SIDE = 4096  # a camera's own size is kept up to this; larger parts are decoded reduced
_RECV = 256 * 1024
_PADDING = b"\r\n\x00 "  # what cameras put after a JPEG's end marker, before the next boundary


class NotMultipart(Exception):
    """The server answered, but not with an MJPEG stream."""


class MjpegStream:
    """An http:// or https:// camera stream; MJPEG read here, anything else by FFmpeg."""

    live = True

    def __init__(self, url: str, timeout: float = TIMEOUT_S, max_side: int = STREAM_MAX_SIDE,
                 ssl_context: ssl.SSLContext | None = None, record: bool = True):
        self.uri = url
        self.record = record  # a stream handed to FFmpeg: its packets ride on the frames, for clips
        self.ssl_context = ssl_context  # https: None verifies against the system's CAs
        self.name = redact(url)
        self.timeout = timeout
        self.max_side = max_side
        self.frames_corrupt = 0
        self.scanned = 0  # bytes examined in looking for the ends of headers and parts
        self.on_corrupt: object = None  # set by the capture thread: called once per skipped part
        self._ffmpeg: NetworkStream | None = None
        self._sock: socket.socket | None = None
        self._buf = bytearray()
        self._delim = b""
        self._size: tuple[int, int] | None = None
        self._stop = threading.Event()
        # The warnings given once, by kind. The capture thread hands every stream it opens the
        # same set, so that a camera dropping each connection is not warned about each time.
        self.warned: set[str] = set()
        self._deadline = 0.0
        self._pending: Capture | None = None  # the first frame, read by open()
        self._unreported = 0  # corrupt frames not yet passed to on_corrupt (set after open)

    @property
    def fps(self) -> float | None:
        return self._ffmpeg.fps if self._ffmpeg is not None else None

    # --- connection -------------------------------------------------------------------------

    def open(self) -> None:
        """Connect and wait for the first good frame (as FFmpeg's probe does): a camera that
        answers but sends nothing is not open, and the capture thread keeps reconnecting."""
        try:
            self._connect()
        except NotMultipart as e:
            log.log(logging.WARNING if e.args[0].startswith("TLS") else logging.INFO,
                    "%s: %s; reading it with FFmpeg", redact(self.uri), e)
            self._ffmpeg = NetworkStream(self.uri, record=self.record)
            self._ffmpeg.open()
            return
        except _Interrupted:
            raise SourceError(f"{redact(self.uri)}: interrupted while opening") from None
        try:
            self._pending = self._next()
        except BaseException:
            self._close_socket()
            raise
        if self._pending is None:
            self._close_socket()
            raise SourceError(f"{redact(self.uri)}: interrupted while opening")

    def _connect(self) -> None:
        u = urlsplit(self.uri)
        if u.scheme not in ("http", "https") or not u.hostname:
            raise SourceError(f"{redact(self.uri)}: not an http:// or https:// URL")
        try:
            port = u.port or (443 if u.scheme == "https" else 80)
        except ValueError:
            raise SourceError(f"{redact(self.uri)}: bad port in URL") from None
        where = f"{redact(self.uri)}: cannot connect"
        try:
            sock = socket.create_connection((u.hostname, port), timeout=self.timeout)
        except OSError as e:
            raise SourceError(f"{where} ({e.strerror or e})") from None
        try:
            if u.scheme == "https":
                ctx = self.ssl_context or ssl.create_default_context()
                try:
                    sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
                except ssl.SSLCertVerificationError as e:
                    # Cameras often have self-signed certificates; FFmpeg never checked them,
                    # so such a camera keeps working as it did, and the log says so.
                    sock.close()
                    raise NotMultipart(f"TLS certificate not verified ({e.verify_message}), and "
                                       "FFmpeg does not check it") from None
            host = f"[{u.hostname}]" if ":" in u.hostname else u.hostname
            if u.port:
                host += f":{u.port}"
            lines = [f"GET {u.path or '/'}{'?' + u.query if u.query else ''} HTTP/1.0", f"Host: {host}",
                     "User-Agent: edgedetect", "Accept: multipart/x-mixed-replace, */*"]
            if u.username is not None:
                cred = f"{unquote(u.username)}:{unquote(u.password or '')}".encode()
                lines.append("Authorization: Basic " + base64.b64encode(cred).decode())
            sock.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        except (OSError, ssl.SSLError) as e:
            sock.close()
            raise SourceError(f"{where} ({e})") from None
        self._sock, self._buf = sock, bytearray()
        self._deadline = clock.now() + self.timeout
        try:
            self._read_response()
        except BaseException:
            self._close_socket()
            raise

    def _read_response(self) -> None:
        end = self._find(b"\r\n\r\n", 0, MAX_HEADER_BYTES, "the HTTP response headers")
        head = bytes(self._buf[:end]).decode("latin-1").split("\r\n")
        del self._buf[:end + 4]
        m = re.match(r"HTTP/\d(?:\.\d)?\s+(\d{3})\s*(.*)", head[0])
        if not m:
            raise SourceError(f"{redact(self.uri)}: not an HTTP response ({head[0][:60]!r})")
        status = int(m.group(1))
        headers = _headers(head[1:])
        ctype = headers.get("content-type", "")
        if status != 200:
            raise NotMultipart(f"HTTP {status} {m.group(2)}".strip())
        if not ctype.lower().startswith("multipart/") or "chunked" in headers.get("transfer-encoding", ""):
            raise NotMultipart(f"content type {ctype or 'not given'}")
        b = re.search(r'boundary="?([^";]+)"?', ctype, re.IGNORECASE)
        if not b:
            raise NotMultipart(f"no boundary in {ctype!r}")
        # "--" + boundary begins each part; some cameras put the dashes into the parameter too.
        self._delim = b"--" + b.group(1).strip().lstrip("-").encode("latin-1")

    def _fill(self) -> None:
        """More bytes into the buffer, or SourceError (closed, timed out, interrupted)."""
        assert self._sock is not None
        if self._stop.is_set():
            raise _Interrupted
        if clock.now() > self._deadline:  # bytes trickle in, but no frame: a stall all the same
            raise SourceError(f"{redact(self.uri)}: no complete frame for {self.timeout:.0f} s")
        try:
            chunk = self._sock.recv(_RECV)
        except TimeoutError:
            raise SourceError(f"{redact(self.uri)}: no data for {self.timeout:.0f} s") from None
        except (OSError, ssl.SSLError) as e:
            if self._stop.is_set():
                raise _Interrupted from None
            raise SourceError(f"{redact(self.uri)}: connection lost ({e})") from None
        if not chunk:
            if self._stop.is_set():
                raise _Interrupted
            raise SourceError(f"{redact(self.uri)}: stream closed by the camera")
        self._buf += chunk

    def _search(self, what: bytes, start: int, stop: int | None = None) -> int:
        """The buffer's find(what, start, stop), counted in `scanned`."""
        stop = len(self._buf) if stop is None else min(stop, len(self._buf))
        self.scanned += max(0, stop - start)
        return self._buf.find(what, start, stop)

    def _find(self, what: bytes, start: int, limit: int, looking_for: str) -> int:
        """Index of `what` at or after `start`, reading as needed, at most `limit` bytes on."""
        pos = start
        while True:
            i = self._search(what, pos, start + limit + len(what))
            if i != -1:
                return i
            if len(self._buf) - start > limit:
                raise SourceError(f"{redact(self.uri)}: {looking_for} not found in {limit // 1024} KB")
            pos = max(start, len(self._buf) - len(what) + 1)
            self._fill()

    # --- parts ------------------------------------------------------------------------------

    def _part(self) -> bytes:
        """The next part's body; the buffer then starts right after it."""
        i = self._find(self._delim, 0, MAX_PART_BYTES, "a multipart boundary")
        eol = self._find(b"\n", i, 1024, "the end of a boundary line")
        if bytes(self._buf[i + len(self._delim):eol]).strip().startswith(b"--"):
            raise SourceError(f"{redact(self.uri)}: stream ended by the camera")
        lines, pos = [], eol + 1
        while True:  # the part's headers, up to an empty line
            nl = self._find(b"\n", pos, MAX_HEADER_BYTES - (pos - eol), "the end of a part's headers")
            line = bytes(self._buf[pos:nl]).rstrip(b"\r")
            pos = nl + 1
            if not line:
                break
            lines.append(line.decode("latin-1"))
        del self._buf[:pos]
        return self._body(_int(_headers(lines).get("content-length")))

    def _body(self, length: int | None) -> bytes:
        if length is not None and not 0 < length <= MAX_PART_BYTES:
            length = None
        if length is not None:
            searched = 0
            while len(self._buf) < length:
                # The next boundary inside the declared length: the length is too long.
                j = self._search(self._delim, max(0, searched - len(self._delim)))
                if j != -1:
                    return self._until(j, length)
                searched = len(self._buf)
                self._fill()
            j = self._search(self._delim, max(0, searched - len(self._delim)), length)
            if j != -1:
                return self._until(j, length)
            if not self._buf.startswith(b"\xff\xd8") or self._ends_jpeg(length):
                body = bytes(self._buf[:length])
                del self._buf[:length]
                return body
            # A JPEG that does not end where its length says: the length is too short, or the
            # part is cut; the next boundary tells which.
        pos = 0
        # Without a length, a complete JPEG at the end of what came is the whole part (no
        # waiting for the next boundary, which comes only with the next frame).
        jpeg_end = _JpegEnd() if length is None else None
        while True:
            j = self._search(self._delim, pos)
            if j != -1:
                return self._until(j, length)
            if jpeg_end is not None:
                self.scanned += jpeg_end.extend(self._buf)
                if jpeg_end.whole:
                    body = bytes(self._buf)
                    del self._buf[:]
                    return body
            if len(self._buf) > MAX_PART_BYTES:
                raise SourceError(f"{redact(self.uri)}: a part over {MAX_PART_BYTES // 2**20} MB without a boundary")
            pos = max(0, len(self._buf) - len(self._delim) + 1)
            self._fill()

    def _ends_jpeg(self, end: int) -> bool:
        """Whether the buffer up to `end`, line ends and padding aside, ends with a JPEG's end marker."""
        self.scanned += end
        return self._buf[:end].rstrip(_PADDING).endswith(b"\xff\xd9")

    def _until(self, j: int, length: int | None) -> bytes:
        """The part up to the boundary at j (the buffer keeps the boundary)."""
        body = bytes(self._buf[:j])
        del self._buf[:j]
        body = body[:-2] if body.endswith(b"\r\n") else body[:-1] if body.endswith(b"\n") else body
        if length is not None and length != len(body) and "length" not in self.warned:
            self.warned.add("length")
            log.warning("%s: a part's Content-Length says %d bytes but it has %d; read up to the next "
                        "boundary instead (said once)", redact(self.uri), length, len(body))
        return body

    def _corrupt(self, why: str) -> None:
        self.frames_corrupt += 1
        self._unreported += 1
        self._report_corrupt()
        if "corrupt" not in self.warned:
            self.warned.add("corrupt")
            log.warning("%s: skipped a corrupt frame (%s); further ones are counted in frames_corrupt",
                        redact(self.uri), why)

    def read(self) -> Capture | None:
        if self._ffmpeg is not None:
            return self._ffmpeg.read()
        self._report_corrupt()
        if self._pending is not None:
            cap, self._pending = self._pending, None
            return cap
        if self._sock is None:
            raise SourceError(f"{redact(self.uri)}: not open")
        return self._next()

    def _next(self) -> Capture | None:
        """The next good frame; None when interrupted."""
        self._deadline = clock.now() + self.timeout
        corrupt = 0
        try:
            while True:
                body = self._part()
                try:
                    img = decode(body, self.max_side)
                except BadImage as e:
                    corrupt += 1
                    self._corrupt(str(e) if body else "empty part")
                    if clock.now() > self._deadline:
                        raise SourceError(f"{redact(self.uri)}: no good frame for {self.timeout:.0f} s "
                                          f"({corrupt} corrupt parts; last: {e})") from None
                    continue
                self._check_size(img)
                return Capture(img)
        except _Interrupted:
            return None

    def _check_size(self, img: np.ndarray) -> None:
        h, w = img.shape[:2]
        if self._size is not None and self._size != (w, h):
            log.info("%s: picture size changed from %dx%d to %dx%d", redact(self.uri), *self._size, w, h)
        self._size = (w, h)

    # --- stopping ---------------------------------------------------------------------------

    def interrupt(self) -> None:
        """Make a read blocked on the network return now (from any thread)."""
        self._stop.set()
        sock = self._sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        if self._ffmpeg is not None:
            self._ffmpeg.interrupt()

    def _close_socket(self) -> None:
        sock, self._sock = self._sock, None
        if sock is not None:
            try:
                sock.close()
            except OSError:
                pass

    def close(self) -> None:
        self._close_socket()
        self._buf = bytearray()
        if self._ffmpeg is not None:
            self._ffmpeg.close()
            self._ffmpeg = None
        self._pending = None

    def _report_corrupt(self) -> None:
        if callable(self.on_corrupt):
            for _ in range(self._unreported):
                self.on_corrupt()
            self._unreported = 0


class _Interrupted(Exception):
    pass


class _JpegEnd:
    """Whether the bytes of a part received so far are one whole JPEG (line ends and padding
    aside), as decode.jpeg_complete says, followed chunk by chunk: padding is looked for in the
    new bytes only, and the walk over the JPEG's segments to its first scan goes on from the
    segment where the previous walk ran out of bytes. A part of endless tiny segments or of
    endless padding then costs its length once, not once per chunk."""

    def __init__(self) -> None:
        self.seen = 0  # bytes of the part looked at so far
        self.end = 0  # just past the last byte that is not a line end or padding
        self.walk_at = 2  # the segment the walk to the first scan goes on from; 0: no scan to find
        self.sos = -1  # where the first scan starts, once the walk got there
        self.whole = False

    def extend(self, buf: bytearray) -> int:
        """Take in the bytes added to `buf` since the last call; returns how many were examined."""
        start, self.seen = self.seen, len(buf)
        content = buf[start:].rstrip(_PADDING)
        if content:
            self.end = start + len(content)
        examined = self.seen - start
        if self.end < 4 or buf[self.end - 2:self.end] != b"\xff\xd9" or not buf.startswith(b"\xff\xd8"):
            return examined
        if self.sos < 0 and self.walk_at:
            for marker, i in jpeg_segments(buf, self.walk_at):
                examined += i - self.walk_at
                self.walk_at = i
                if marker == 0xDA:
                    self.sos = i
                elif marker == 0xD9 or i > MAX_HEADER_BYTES:
                    # An end before any scan, or longer headers than a camera's frames have:
                    # only the next boundary ends this part.
                    self.walk_at = 0
                    break
        # The scan's header, entropy-coded data, then the end marker.
        self.whole = self.sos >= 0 and self.end - self.sos > 4
        return examined


def _headers(lines: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for line in lines:
        name, sep, value = line.partition(":")
        if sep:
            out[name.strip().lower()] = value.strip()
    return out


def _int(value: str | None) -> int | None:
    try:
        return int(value) if value is not None else None
    except ValueError:
        return None
