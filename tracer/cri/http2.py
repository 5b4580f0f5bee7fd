"""HTTP/2 framing as a gRPC peer uses it: frame types, flags, settings, the
checks that tell a plausible frame header (or header block) from bytes that
are not one."""

from __future__ import annotations

from tracer.cri.hpack_table import DecodedBlock

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, WINDOW_UPDATE, CONTINUATION = range(10)
FRAME_NAMES = (
    "DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS",
    "PUSH_PROMISE", "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION",
)
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY_FLAG = 0x1, 0x1, 0x4, 0x8, 0x20
_VALID_FLAGS = (0x09, 0x2D, 0, 0, 0x01, 0x0C, 0x01, 0, 0, 0x04)
DEFAULT_MAX_FRAME = 16384
PROTOCOL_MAX_FRAME = (1 << 24) - 1
SETTINGS_HEADER_TABLE_SIZE = 0x1
SETTINGS_MAX_FRAME_SIZE = 0x5
_MAX_CONTROL_PAYLOAD = 64 << 10

ERROR_CODES = {
    0: "NO_ERROR", 1: "PROTOCOL_ERROR", 2: "INTERNAL_ERROR", 3: "FLOW_CONTROL_ERROR",
    4: "SETTINGS_TIMEOUT", 5: "STREAM_CLOSED", 6: "FRAME_SIZE_ERROR", 7: "REFUSED_STREAM",
    8: "CANCEL", 9: "COMPRESSION_ERROR", 10: "CONNECT_ERROR", 11: "ENHANCE_YOUR_CALM",
    12: "INADEQUATE_SECURITY", 13: "HTTP_1_1_REQUIRED",
}


def check_frame_header(length: int, ftype: int, flags: int, sid_raw: int, limit: int, strict: bool) -> str | None:
    """Why a 9-byte frame header is implausible from a gRPC peer, or None.

    ``strict`` adds the checks used to prove a frame boundary after a gap:
    no undefined flags, no reserved bit, client-initiated (odd) streams only.
    """
    if ftype > CONTINUATION or ftype == PUSH_PROMISE:  # gRPC never pushes
        return "bad_frame_type"
    if length > limit:
        return "frame_too_large"
    sid = sid_raw & 0x7FFFFFFF
    if ftype in (SETTINGS, PING, GOAWAY):
        if sid:
            return "bad_stream_id"
    elif ftype != WINDOW_UPDATE and not sid:
        return "bad_stream_id"
    if ftype == SETTINGS and (length % 6 or (flags & ACK and length)):
        return "bad_frame_length"
    if (ftype == PING and length != 8) or (ftype in (RST_STREAM, WINDOW_UPDATE) and length != 4):
        return "bad_frame_length"
    if (ftype == PRIORITY and length != 5) or (ftype == GOAWAY and length < 8):
        return "bad_frame_length"
    if ftype == DATA and flags & PADDED and length < 1:
        return "bad_frame_length"
    if ftype == HEADERS and length < (1 if flags & PADDED else 0) + (5 if flags & PRIORITY_FLAG else 0):
        return "bad_frame_length"
    if strict:
        if sid_raw & 0x80000000 or flags & ~_VALID_FLAGS[ftype]:
            return "bad_flags"
        if sid and not sid & 1:
            return "even_stream_id"
    return None


_REQUEST_PSEUDO = frozenset({b":method", b":scheme", b":path", b":authority"})


def header_block_problem(block: DecodedBlock, kind: str) -> str | None:
    """Why a decoded block cannot be a gRPC peer's, or None.

    ``kind`` is "request", "response" (first server block) or "trailers".
    HTTP/2 and gRPC rules that an encoder never breaks, so that breaking one
    means the bytes were not what they seemed (duplicated or injected data).
    Fields with unresolved names are not judged.
    """
    allowed = _REQUEST_PSEUDO if kind == "request" else frozenset({b":status"}) if kind == "response" else frozenset()
    seen: set[bytes] = set()
    regular = False
    for f in block.fields:
        name = f.name
        if name is None:
            continue
        if name != name.lower() or not name:
            return "malformed_header_name"
        if name.startswith(b":"):
            if regular or name in seen or name not in allowed:
                return "malformed_pseudo_headers"
            seen.add(name)
        else:
            regular = True
        if name == b":method" and f.value != b"POST":
            return "malformed_method"
        if name == b"content-type" and f.value is not None and not f.value.startswith(b"application/grpc"):
            return "malformed_content_type"
    return None
