"""Pod starts as a picture: one waterfall per pod, layers colour-coded.

In the spirit of `systemd-analyze plot`: a hand-written SVG that any
browser shows (hover a bar for its details), no plotting library.  Pods are
stacked one under the other, each titled `pod ns/name` with its duration
and status, on one common time scale so that bar lengths compare across
pods.  Each section starts with the pod's critical path (the layer that
held the start at each moment), then one row per span in tree order.
ERROR spans get a red outline; the spans where an error starts (see
`exporters.status.error_spans`) get a line with their diagnosis.
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Sequence
from xml.sax.saxutils import escape, quoteattr

from exporters.base import ExportResult
from exporters.status import error_spans, error_text, pod_status, span_label
from tracer.files import write_private
from tracer.spans.critical_path import (
    LAYER_LABELS,
    LAYERS,
    SUMMARY_SEPARATOR,
    CriticalPath,
    children_by_parent,
    critical_path,
    span_layers,
)
from tracer.spans.model import Span, Trace

LAYER_COLOURS = {
    "kubelet": "#4e79a7", "containerd": "#f28e2b", "cni": "#59a14f", "shim": "#b07aa1",
    "runc_create": "#76b7b2", "runc_init": "#edc948", "runc_start": "#9c755f", "process": "#ff9da7",
}
ERROR_COLOUR = "#d62728"
STATUS_COLOURS = {"ok": "#2e7d32", "error": ERROR_COLOUR, "partial": "#b26a00"}
TEXT_COLOUR = "#222222"
QUIET_COLOUR = "#666666"
GRID_COLOUR = "#dddddd"
ZEBRA_COLOUR = "#f4f4f4"

# A monospace font, so that text widths (for eliding) are known without a
# font engine: DejaVu Sans Mono advances 0.602 em per character.
FONT_FAMILY = "DejaVu Sans Mono, Menlo, Consolas, monospace"
CHAR_EM = 0.602
FONT_SIZE = 12
CHAR_WIDTH = CHAR_EM * FONT_SIZE
TITLE_SIZE = 15

MARGIN = 16
LABEL_WIDTH = 44 * CHAR_WIDTH           # span names, indented by depth
CHART_X = MARGIN + LABEL_WIDTH + 12
CHART_WIDTH = 880                       # the longest pod start
DURATION_ROOM = 14 * CHAR_WIDTH         # right of the chart, for the last bar's duration
WIDTH = CHART_X + CHART_WIDTH + DURATION_ROOM + MARGIN
ROW = 18
BAR = 12
INDENT = 2                              # characters per level of depth
SECTION_GAP = 28
TICKS_WANTED = 10
MESSAGE_LINES = 2                       # an error message beyond that is elided


def _text(x: float, y: float, content: str, *, size: int = FONT_SIZE, fill: str = TEXT_COLOUR,
          anchor: str = "start", weight: str = "normal", style: str = "normal") -> str:
    return (f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" fill="{fill}" text-anchor="{anchor}"'
            f' font-weight="{weight}" font-style="{style}">{escape(content)}</text>')


def elide(text: str, max_chars: int) -> str:
    """Cut the middle out of a text too long for its room: both ends of a
    span name or an error message say the most ("failed to create … no
    such file or directory")."""
    if len(text) <= max_chars:
        return text
    if max_chars < 2:
        return "…"[:max_chars]
    head = (max_chars - 1) // 2
    tail = max_chars - 1 - head
    return text[:head] + "…" + text[len(text) - tail:]


def _chars_in(width: float) -> int:
    return max(0, int(width // CHAR_WIDTH))


def tick_step_ns(total_ns: int) -> int:
    """1, 2 or 5 times a power of ten (in ns), for at most TICKS_WANTED ticks."""
    raw = max(total_ns / TICKS_WANTED, 1)
    power = 10 ** math.floor(math.log10(raw))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= raw))


def _ms(ns: int) -> str:
    ms = ns / 1e6
    return f"{ms:.0f}" if ms >= 10 or ms == int(ms) else f"{ms:g}"


def _tree(trace: Trace) -> list[tuple[Span, int]]:
    """(span, depth) below the root in tree order, children by start time."""
    children = children_by_parent(trace)
    ordered: list[tuple[Span, int]] = []

    def walk(span: Span, depth: int) -> None:
        for child in children.get(span.span_id, []):
            ordered.append((child, depth))
            walk(child, depth + 1)

    walk(trace.root, 0)
    return ordered


class _Canvas:
    def __init__(self, scale: float):
        self.scale = scale          # px per ns
        self.parts: list[str] = []
        self.y = float(MARGIN)

    def x(self, offset_ns: int) -> float:
        return CHART_X + offset_ns * self.scale

    def add(self, part: str) -> None:
        self.parts.append(part)


def _legend(canvas: _Canvas, title: str, traces: Sequence[Trace], longest_ns: int) -> None:
    canvas.y += TITLE_SIZE
    canvas.add(_text(MARGIN, canvas.y, title, size=TITLE_SIZE + 2, weight="bold"))
    canvas.y += ROW + 2
    canvas.add(_text(MARGIN, canvas.y, f"{len(traces)} pod start(s); times from each pod's first step; "
                     f"one scale for all: {CHART_WIDTH} px = {longest_ns / 1e6:.1f} ms", fill=QUIET_COLOUR))
    canvas.y += ROW
    x = float(MARGIN)
    for layer in LAYERS:
        canvas.add(f'<rect x="{x:.1f}" y="{canvas.y - BAR + 2:.1f}" width="{BAR}" height="{BAR}" '
                   f'fill="{LAYER_COLOURS[layer]}"/>')
        canvas.add(_text(x + BAR + 4, canvas.y, LAYER_LABELS[layer]))
        x += BAR + 4 + (len(LAYER_LABELS[layer]) + 3) * CHAR_WIDTH
    canvas.add(f'<rect x="{x:.1f}" y="{canvas.y - BAR + 2:.1f}" width="{BAR * 2}" height="{BAR}" fill="#ffffff" '
               f'stroke="{ERROR_COLOUR}" stroke-width="2"/>')
    canvas.add(_text(x + BAR * 2 + 4, canvas.y, "ERROR", fill=ERROR_COLOUR, weight="bold"))
    x += BAR * 2 + 4 + 8 * CHAR_WIDTH
    canvas.add(_diamond(x + BAR / 2, canvas.y - BAR + 2, QUIET_COLOUR))
    canvas.add(_text(x + BAR + 4, canvas.y, "under a pixel long"))
    canvas.y += ROW
    canvas.add(_text(MARGIN, canvas.y, "critical path: the layer each pod start was waiting on, moment by moment; "
                     "then one row per span, hover for details", fill=QUIET_COLOUR))
    canvas.y += SECTION_GAP


def _section(canvas: _Canvas, trace: Trace) -> None:
    root = trace.root
    origin = root.start_ns
    total = max(0, root.end_ns - origin)
    status = pod_status(trace)
    rows = _tree(trace)
    layers = span_layers(trace)
    path = critical_path(trace)
    depth_of = {span.span_id: depth for span, depth in rows}
    messages = {span.span_id: _message_lines(span, _chars_in(WIDTH - MARGIN - _message_x(depth_of[span.span_id])))
                for span in error_spans(trace)}

    canvas.add(f'<g class="pod" data-trace-id="{trace.trace_id}">')
    canvas.y += TITLE_SIZE
    canvas.add(_text(MARGIN, canvas.y, trace.name, size=TITLE_SIZE, weight="bold"))
    after_name = MARGIN + (len(trace.name) + 2) * TITLE_SIZE * CHAR_EM
    canvas.add(_text(after_name, canvas.y, f"{total / 1e6:.1f} ms", size=TITLE_SIZE, weight="bold"))
    after_total = after_name + (len(f"{total / 1e6:.1f} ms") + 2) * TITLE_SIZE * CHAR_EM
    canvas.add(_text(after_total, canvas.y, status, size=TITLE_SIZE, weight="bold", fill=STATUS_COLOURS[status]))
    canvas.add(_text(WIDTH - MARGIN, canvas.y, f"trace {trace.trace_id}", fill=QUIET_COLOUR, anchor="end"))
    notes = []
    if path.segments:
        notes.append((_fitting_summary(path, _chars_in(WIDTH - 2 * MARGIN)), TEXT_COLOUR))
    if root.status == "ERROR":
        notes.append((f"failed: {error_text(root)}", ERROR_COLOUR))
    if root.attributes.get("tracer.partial"):
        notes.append((f"incomplete: {root.attributes.get('tracer.partial.reasons', '')}", STATUS_COLOURS["partial"]))
    for note, colour in notes:
        canvas.y += ROW
        canvas.add(_text(MARGIN, canvas.y, elide(note, _chars_in(WIDTH - 2 * MARGIN)), fill=colour))

    # time axis: tick labels above, grid lines through every row below
    canvas.y += ROW + 4
    step = tick_step_ns(total)
    ticks = range(0, total + 1, step)
    grid_top = canvas.y + 4
    row_count = 1 + len(rows) + sum(len(lines) for lines in messages.values())
    grid_bottom = grid_top + ROW * row_count + 4
    # every other row shaded, so that a name leads the eye to its bar
    for index in range(1, row_count, 2):
        canvas.add(f'<rect x="{MARGIN}" y="{grid_top + 5 + index * ROW:.1f}" width="{WIDTH - 2 * MARGIN:.1f}" '
                   f'height="{ROW}" fill="{ZEBRA_COLOUR}"/>')
    for offset in ticks:
        x = canvas.x(offset)
        canvas.add(f'<line x1="{x:.1f}" y1="{grid_top:.1f}" x2="{x:.1f}" y2="{grid_bottom:.1f}" '
                   f'stroke="{GRID_COLOUR}"/>')
        canvas.add(_text(x, canvas.y, _ms(offset) + (" ms" if offset == 0 else ""), size=10,
                         fill=QUIET_COLOUR, anchor="middle" if offset else "start"))
    canvas.add(f'<line x1="{CHART_X:.1f}" y1="{grid_top:.1f}" x2="{canvas.x(total):.1f}" y2="{grid_top:.1f}" '
               f'stroke="{QUIET_COLOUR}"/>')

    # the critical path: which layer held the start, moment by moment
    canvas.y = grid_top + ROW
    canvas.add(_text(MARGIN, canvas.y, "critical path", style="italic", weight="bold"))
    for segment in path.segments:
        x = canvas.x(segment.start_ns - origin)
        tooltip = (f"{LAYER_LABELS[segment.layer]}: {span_label(segment.span)}, "
                   f"+{(segment.start_ns - origin) / 1e6:.1f} ms for {segment.duration_ns / 1e6:.1f} ms")
        canvas.add(f'<rect class="critical" x="{x:.2f}" y="{canvas.y - BAR + 1:.1f}" '
                   f'width="{max(segment.duration_ns * canvas.scale, 0.5):.2f}" height="{BAR + 2}" '
                   f'fill="{LAYER_COLOURS[segment.layer]}"><title>{escape(tooltip)}</title></rect>')

    for span, depth in rows:
        canvas.y += ROW
        _span_row(canvas, span, depth, origin, layers[span.span_id])
        for line in messages.get(span.span_id, ()):
            canvas.y += ROW
            canvas.add(_text(_message_x(depth), canvas.y, line, fill=ERROR_COLOUR, style="italic"))
    canvas.add("</g>")
    canvas.y += SECTION_GAP


def _fitting_summary(path: CriticalPath, room: int) -> str:
    """As many of the largest layers as fit, whole."""
    layers = len(path.ranked_layers())
    for shown in range(layers, 0, -1):
        text = "critical path: " + path.summary(layers=shown) + (SUMMARY_SEPARATOR + "…" if shown < layers else "")
        if len(text) <= room:
            return text
    return elide(text, room)


def _diamond(x: float, top: float, colour: str, attributes: str = "", tooltip: str = "") -> str:
    """A span too short for a bar (the entrypoint's exec is an instant)."""
    half = BAR / 2
    points = f"{x:.1f},{top - 1:.1f} {x + half:.1f},{top + half:.1f} {x:.1f},{top + BAR + 1:.1f} " \
             f"{x - half:.1f},{top + half:.1f}"
    title = f"<title>{escape(tooltip)}</title>" if tooltip else ""
    return f'<polygon points="{points}" fill="{colour}"{attributes}>{title}</polygon>'


def _span_row(canvas: _Canvas, span: Span, depth: int, origin: int, layer: str) -> None:
    indent = INDENT * depth
    name = elide(span_label(span), _chars_in(LABEL_WIDTH) - indent)
    is_error = span.status == "ERROR"
    canvas.add(_text(MARGIN + indent * CHAR_WIDTH, canvas.y, name, fill=ERROR_COLOUR if is_error else TEXT_COLOUR))
    start = span.start_ns - origin
    duration = max(0, span.end_ns - span.start_ns)
    x = canvas.x(start)
    tooltip = (f"{span.name} ({span.service}, {LAYER_LABELS[layer]}): +{start / 1e6:.1f} ms "
               f"for {duration / 1e6:.1f} ms")
    if is_error:
        tooltip += f"; ERROR {error_text(span)}"
    top = canvas.y - BAR + 2
    colour = LAYER_COLOURS[layer]
    stroke = f' stroke="{ERROR_COLOUR}" stroke-width="2"' if is_error else ""
    if duration * canvas.scale < 1.5:
        canvas.add(_diamond(x, top, colour, ' class="span"' + stroke, tooltip))
        end_x = x + BAR / 2
    else:
        canvas.add(f'<rect class="span" x="{x:.2f}" y="{top:.1f}" width="{duration * canvas.scale:.2f}" '
                   f'height="{BAR}" fill="{colour}"{stroke}><title>{escape(tooltip)}</title></rect>')
        end_x = x + duration * canvas.scale
    label = f"{duration / 1e6:.1f} ms" + (" ✖" if is_error else "")
    canvas.add(_text(end_x + 5, canvas.y, label, size=10, fill=ERROR_COLOUR if is_error else QUIET_COLOUR))


def _message_x(depth: int) -> float:
    """Error messages start under their span's name, one level in."""
    return MARGIN + INDENT * (depth + 1) * CHAR_WIDTH


def _message_lines(span: Span, room: int) -> list[str]:
    """The span's diagnosis (else its status message) on at most
    MESSAGE_LINES lines, the last one elided in the middle if need be."""
    lines = textwrap.wrap(f"✖ {error_text(span)}", room, subsequent_indent="  ", break_on_hyphens=False) or ["✖"]
    if len(lines) > MESSAGE_LINES:
        lines = lines[:MESSAGE_LINES - 1] + [elide(" ".join(lines[MESSAGE_LINES - 1:]), room)]
    return lines


def render_svg(traces: Sequence[Trace], title: str = "Pod starts") -> str:
    """Every pod start in `traces`, in order, as one SVG document."""
    longest = max((max(0, t.root.end_ns - t.root.start_ns) for t in traces), default=0)
    canvas = _Canvas(CHART_WIDTH / max(longest, 1))
    _legend(canvas, title, traces, longest)
    for trace in traces:
        _section(canvas, trace)
    height = canvas.y + MARGIN
    return "\n".join([
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0f}" height="{height:.0f}" '
        f'viewBox="0 0 {WIDTH:.0f} {height:.0f}" font-family={quoteattr(FONT_FAMILY)}>',
        '<rect width="100%" height="100%" fill="#ffffff"/>',
        *canvas.parts,
        "</svg>",
        "",
    ])


class SvgExporter:
    """Writes all traces it is given to one SVG file (mode 0600, like the
    other trace files: spans name processes and paths), replacing it."""

    def __init__(self, path: str | os.PathLike, title: str | None = None):
        self.path = os.fspath(path)
        self.title = title or "Pod starts"

    def export(self, traces: Sequence[Trace]) -> ExportResult:
        try:
            write_private(self.path, render_svg(traces, self.title).encode())
        except OSError as error:
            return ExportResult(0, len(traces), f"{self.path}: {error}")
        return ExportResult(len(traces))

    def shutdown(self) -> None:
        pass
