"""Host names and addresses: which ones may be listened on, and which ones in a request's Host
header mean this machine. The config checks [http] with these, and the viewer's server refuses
requests by them."""

from __future__ import annotations

import ipaddress
import re

from edgedetect.errors import UserError, shorten


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_host(host: str) -> None:
    """An address to listen on: an IPv4 or IPv6 address, or a host name. Numbers that are no
    address (999.1.1.1) are refused here, before anything else is said about the host."""
    if host in ("", "localhost"):
        return
    try:
        ipaddress.ip_address(host)
        return
    except ValueError:
        pass
    if ":" in host or re.fullmatch(r"[0-9.]+", host):
        raise UserError(f"http.host: {shorten(repr(host))} is not a valid IP address "
                        "(expected e.g. 127.0.0.1, 0.0.0.0, ::1 or a host name)")
    if not re.fullmatch(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", host):
        raise UserError(f"http.host: {shorten(repr(host))} is not a valid IP address or host name")


def host_name(value: str) -> str:
    """The name or address of a Host header as compared: without the port or the brackets of an
    IPv6 address, in lower case, without the trailing dot of a fully qualified name. "" when it
    is malformed (an IPv6 address without brackets, a port that is no number): no name matches."""
    value = value.strip().lower()
    if value.startswith("["):
        name, closed, port = value[1:].partition("]")
        if not closed or not re.fullmatch(r"(:[0-9]*)?", port):
            return ""
    else:
        name, _, port = value.partition(":")
        if not re.fullmatch(r"[0-9]*", port):
            return ""
    return name.removesuffix(".")


def is_loopback_name(name: str) -> bool:
    """A Host that can only mean this machine: localhost and every name below it (RFC 6761 keeps
    them off DNS, and browsers resolve them to loopback themselves), 127.0.0.0/8, ::1."""
    return name == "localhost" or name.endswith(".localhost") or is_loopback(name)


def allowed_name(entry: str) -> str:
    """An [http] allowed_hosts entry as host_name gives a Host header's name: in lower case,
    without a trailing dot or the brackets of an IPv6 address."""
    name = entry.lower().removesuffix(".")
    name = name[1:-1] if name.startswith("[") and name.endswith("]") else name
    try:
        return str(ipaddress.ip_address(name))  # the form browsers write an address in (fd00::5)
    except ValueError:
        return name


def allowed_host_problem(entry: str) -> str:
    """What keeps an [http] allowed_hosts entry from naming a host ("": nothing)."""
    name = allowed_name(entry)
    try:
        check_host(name)  # the names and addresses one may listen on are those one may be called by
    except UserError:
        name = ""
    return "" if name else 'is not a host name or IP address (expected e.g. "pi.local" or "192.168.1.20", without port)'


def url_host(host: str) -> str:
    """The host as a URL writes it: an IPv6 address in brackets (RFC 3986)."""
    return f"[{host}]" if ":" in host else host
