"""What an HTTP route takes and gives. The viewer's server calls routes; extensions and the event
history provide them without importing the server."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import BinaryIO, Callable, Mapping


@dataclass(frozen=True, slots=True)
class Request:
    method: str  # GET, HEAD or DELETE
    path: str  # without the query
    query: dict[str, list[str]]
    headers: Mapping[str, str] = field(default_factory=dict)  # names in lower case


@dataclass(frozen=True, slots=True)
class FilePart:
    """`length` bytes of an open file from `offset`, sent from disk as the client takes them (a
    large clip never sits in memory). The server closes the file, whether it sends it or not."""

    file: BinaryIO
    offset: int
    length: int


@dataclass(frozen=True, slots=True)
class Response:
    status: int
    body: bytes | FilePart
    content_type: str
    headers: tuple[tuple[str, str], ...] = ()


# An extension's route: a Request in, a Response out (on the HTTP server's thread).
Route = Callable[[Request], Response]
