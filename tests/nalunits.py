"""H.264/H.265 NAL units of a packet, in either framing, to compare a clip with what a camera sent."""

from __future__ import annotations


def nal_units(data: bytes, annexb: bool = False) -> list[bytes]:
    """The NAL units of an Annex-B (RTSP, the Pi's encoder) or a 4-byte-length-prefixed (MP4)
    packet: the same picture differs only in these framings."""
    if annexb:
        # a NAL unit ends in its stop bit, so zero bytes before a start code belong to the start code
        return [n.rstrip(b"\0") for n in data.replace(b"\0\0\0\1", b"\0\0\1").split(b"\0\0\1") if n]
    out, i = [], 0
    while i + 4 <= len(data):
        n = int.from_bytes(data[i:i + 4], "big")
        out.append(data[i + 4:i + 4 + n])
        i += 4 + n
    return out
