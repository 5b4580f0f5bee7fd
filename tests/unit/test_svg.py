"""Pure: the SVG waterfall of committed real captures, and its PNG
rendering (rsvg-convert, from librsvg2-bin, which scripts/install.sh installs)."""

from __future__ import annotations

import shutil
import struct
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from exporters.status import ATTRIBUTE_DIAGNOSIS
from exporters.svg import (
    ERROR_COLOUR,
    LAYER_COLOURS,
    SvgExporter,
    elide,
    render_svg,
    tick_step_ns,
)
from tracer.pipeline.pipeline import replay
from tracer.spans.critical_path import LAYER_LABELS, critical_path
from tracer.spans.model import Trace

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SVG = "{http://www.w3.org/2000/svg}"


def fixture_traces(name: str) -> list[Trace]:
    return replay(str(FIXTURES / f"{name}.rec")).traces()


def parse(document: str) -> ET.Element:
    root = ET.fromstring(document)
    assert root.tag == f"{SVG}svg"
    return root


def texts(element: ET.Element) -> list[str]:
    return [t.text or "" for t in element.iter(f"{SVG}text")]


def test_one_section_per_pod_with_a_bar_per_span():
    traces = fixture_traces("ten-pods") + fixture_traces("host-network-pod")
    root = parse(render_svg(traces))
    sections = [g for g in root.iter(f"{SVG}g") if g.get("class") == "pod"]
    assert [g.get("data-trace-id") for g in sections] == [t.trace_id for t in traces]
    for section, trace in zip(sections, traces):
        assert texts(section)[0] == trace.name
        duration_ms = (trace.root.end_ns - trace.root.start_ns) / 1e6
        assert texts(section)[1:3] == [f"{duration_ms:.1f} ms", "ok"]
        bars = [e for e in section if e.get("class") == "span"]
        assert len(bars) == len(trace.spans) - 1  # the root's row is its critical path
        names = {b.find(f"{SVG}title").text.split(" (")[0] for b in bars}
        assert names == {s.name for s in trace.spans[1:]}
        critical = [e for e in section if e.get("class") == "critical"]
        assert len(critical) == len(critical_path(trace).segments)


def test_legend_names_every_layer_in_its_colour():
    root = parse(render_svg(fixture_traces("one-pod")))
    first_section = next(i for i, e in enumerate(root) if e.get("class") == "pod")
    legend = root[:first_section]
    legend_texts = [e.text for e in legend if e.tag == f"{SVG}text"]
    legend_fills = [e.get("fill") for e in legend if e.tag == f"{SVG}rect"]
    for layer, label in LAYER_LABELS.items():
        assert label in legend_texts
        assert LAYER_COLOURS[layer] in legend_fills
    assert "ERROR" in legend_texts


def test_bars_take_their_layers_colour():
    trace = fixture_traces("one-pod")[0]
    root = parse(render_svg([trace]))
    # a bar's tooltip: "<span name> (<service>, <layer>): …"
    colour_of = {b.find(f"{SVG}title").text.split(", ")[0]: b.get("fill")
                 for b in root.iter() if b.get("class") == "span"}
    assert colour_of["cni bridge ADD (cni"] == LAYER_COLOURS["cni"]
    assert colour_of["runc:[2:INIT] (runc"] == LAYER_COLOURS["runc_init"]
    assert colour_of["runtime.v1.RuntimeService/StartContainer (kubelet"] == LAYER_COLOURS["kubelet"]
    assert colour_of["runtime.v1.RuntimeService/StartContainer (containerd"] == LAYER_COLOURS["containerd"]


def test_error_spans_are_outlined_and_say_what_went_wrong():
    trace = fixture_traces("exiting-pod")[0]
    document = render_svg([trace])
    root = parse(document)
    failing = next(b for b in root.iter() if b.get("class") == "span"
                   and b.find(f"{SVG}title").text.startswith("exec /bin/sh"))
    assert failing.get("stroke") == ERROR_COLOUR
    assert any(t.startswith("✖ application error: the entrypoint exited with 3") for t in texts(root))

    trace.spans[-1].attributes[ATTRIBUTE_DIAGNOSIS] = "the container's command exited with 3 right after it started"
    assert "✖ the container's command exited with 3 right after it started" in texts(parse(render_svg([trace])))


def test_long_names_and_messages_are_elided_in_the_middle():
    assert elide("containerd container 0123456789ab", 40) == "containerd container 0123456789ab"
    assert elide("abcdefghij", 7) == "abc…hij"
    assert len(elide("x" * 500, 44)) == 44
    trace = fixture_traces("one-pod")[0]
    span = next(s for s in trace.spans if s.name == "exec /bin/sleep")
    span.name = "exec /opt/" + "very-long-directory-name/" * 6 + "server"
    span.status, span.status_message = "ERROR", "exited with 1: " + "lots of output " * 60 + "the end"
    document_texts = texts(parse(render_svg([trace])))
    name = next(t for t in document_texts if t.strip().startswith("exec /opt/"))
    assert "…" in name and name.endswith("server") and len(name) <= 44
    message = [t for t in document_texts if "lots of output" in t]
    assert len(message) == 2 and message[0].startswith("✖ exited with 1") and message[1].endswith("the end")


def test_time_axis_ticks_are_round_numbers():
    assert tick_step_ns(143_000_000) == 20_000_000
    assert tick_step_ns(1_147_000_000) == 200_000_000
    assert tick_step_ns(90_000_000) == 10_000_000
    assert tick_step_ns(0) == 1
    labels = texts(parse(render_svg(fixture_traces("one-pod"))))
    assert "0 ms" in labels and "140" in labels and "160" not in labels


def _png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR"
    return struct.unpack(">II", data[16:24])


def test_the_svg_renders_to_a_picture(tmp_path):
    rsvg = shutil.which("rsvg-convert")
    assert rsvg, "rsvg-convert not found: scripts/install.sh installs it (Debian package librsvg2-bin)"
    svg = tmp_path / "pods.svg"
    assert SvgExporter(svg).export(fixture_traces("exiting-pod") + fixture_traces("one-pod")).ok
    root = parse(svg.read_text())
    width, height = int(root.get("width")), int(root.get("height"))
    png = tmp_path / "pods.png"
    subprocess.run([rsvg, str(svg), "-o", str(png)], check=True, timeout=60)
    assert _png_size(png.read_bytes()) == (width, height)
    # the same canvas with nothing drawn on it compresses to almost nothing
    blank = tmp_path / "blank.svg"
    blank.write_text(f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                     f'<rect width="100%" height="100%" fill="#ffffff"/></svg>')
    subprocess.run([rsvg, str(blank), "-o", str(tmp_path / "blank.png")], check=True, timeout=60)
    assert png.stat().st_size > 10 * (tmp_path / "blank.png").stat().st_size


def test_export_reports_a_path_it_cannot_write(tmp_path):
    result = SvgExporter(tmp_path / "missing" / "pods.svg").export(fixture_traces("one-pod"))
    assert not result.ok and "missing" in result.detail


@pytest.mark.parametrize("name", ["one-pod", "host-network-pod"])
def test_an_empty_list_and_single_pods_render(name):
    assert parse(render_svg([])).get("height")
    assert parse(render_svg(fixture_traces(name)))
