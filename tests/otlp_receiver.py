"""Real OTLP trace receivers for tests: gRPC (TraceService) and HTTP/protobuf.

Both decode what they receive with opentelemetry-proto, keep it in a
`Received` store and answer like a collector would.  They listen on
127.0.0.1 only, on a free port, and can be stopped and started again on the
same port (a backend that goes down and comes back)::

    with GrpcReceiver() as receiver:
        exporter = make(endpoint=receiver.endpoint)
        ...
        spans = receiver.received.wait_for(lambda spans: len(spans) >= 3)
"""

from __future__ import annotations

import gzip
import socket
import threading
import time
import zlib
from collections.abc import Callable
from concurrent import futures
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
from opentelemetry.proto.collector.trace.v1 import (
    trace_service_pb2,
    trace_service_pb2_grpc,
)
from opentelemetry.proto.common.v1 import common_pb2
from opentelemetry.proto.trace.v1 import trace_pb2

HOST = "127.0.0.1"


def free_port(host: str = HOST) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def decode_value(value: common_pb2.AnyValue) -> object:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(decode_value(v) for v in value.array_value.values)
    if kind == "kvlist_value":
        return decode_attributes(value.kvlist_value.values)
    if kind is None:
        return None
    return getattr(value, kind)


def decode_attributes(pairs) -> dict[str, object]:
    return {pair.key: decode_value(pair.value) for pair in pairs}


@dataclass(frozen=True)
class ReceivedSpan:
    resource: dict[str, object]
    scope_name: str
    span: trace_pb2.Span

    @property
    def trace_id(self) -> str:
        return self.span.trace_id.hex()

    @property
    def span_id(self) -> str:
        return self.span.span_id.hex()

    @property
    def parent_id(self) -> str | None:
        return self.span.parent_span_id.hex() or None

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, object]:
        return decode_attributes(self.span.attributes)

    @property
    def service(self) -> object:
        return self.resource.get("service.name")


class Received:
    """Everything a receiver was sent, in order; thread-safe."""

    def __init__(self) -> None:
        self._requests: list[trace_service_pb2.ExportTraceServiceRequest] = []
        self._cond = threading.Condition()

    def add(self, request: trace_service_pb2.ExportTraceServiceRequest) -> None:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()

    @property
    def requests(self) -> list[trace_service_pb2.ExportTraceServiceRequest]:
        with self._cond:
            return list(self._requests)

    def spans(self) -> list[ReceivedSpan]:
        result = []
        for request in self.requests:
            for resource_spans in request.resource_spans:
                resource = decode_attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    result.extend(ReceivedSpan(resource, scope_spans.scope.name, span)
                                  for span in scope_spans.spans)
        return result

    def wait_for(self, predicate: Callable[[list[ReceivedSpan]], bool], timeout: float = 10.0) -> list[ReceivedSpan]:
        """Waits until predicate(spans) holds; returns the spans, or raises TimeoutError."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                spans = self.spans()
                if predicate(spans):
                    return spans
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise TimeoutError(f"OTLP receiver: condition not met within {timeout} s "
                                       f"({len(spans)} spans received)")
                self._cond.wait(min(remaining, 0.2))


class _Receiver:
    def __init__(self, port: int = 0, host: str = HOST) -> None:
        self.host = host
        self.port = port or free_port(host)
        self.received = Received()

    @property
    def endpoint(self) -> str:
        """The base URL to give an OTLP exporter (the HTTP exporter appends /v1/traces)."""
        return f"http://{self.host}:{self.port}"

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class _TraceService(trace_service_pb2_grpc.TraceServiceServicer):
    def __init__(self, received: Received):
        self.received = received

    def Export(self, request, context):
        self.received.add(request)
        return trace_service_pb2.ExportTraceServiceResponse()


class GrpcReceiver(_Receiver):
    """An OTLP/gRPC collector's TraceService, plaintext."""

    def __init__(self, port: int = 0, host: str = HOST) -> None:
        super().__init__(port, host)
        self._server: grpc.Server | None = None

    def start(self) -> GrpcReceiver:
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(_TraceService(self.received), server)
        bound = server.add_insecure_port(f"{self.host}:{self.port}")
        if bound != self.port:
            server.stop(0)
            raise OSError(f"could not listen on {self.host}:{self.port}")
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=0).wait()
            self._server = None


class HttpReceiver(_Receiver):
    """An OTLP/HTTP collector: POST /v1/traces with a protobuf ExportTraceServiceRequest."""

    PATH = "/v1/traces"

    def __init__(self, port: int = 0, host: str = HOST) -> None:
        super().__init__(port, host)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.content_types: list[str] = []

    def start(self) -> HttpReceiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    body = gzip.decompress(body)
                elif encoding == "deflate":
                    body = zlib.decompress(body)
                if self.path != receiver.PATH:
                    self._reply(404, b"not found", "text/plain")
                    return
                receiver.content_types.append(self.headers.get("Content-Type") or "")
                request = trace_service_pb2.ExportTraceServiceRequest()
                try:
                    request.ParseFromString(body)
                except Exception:  # a malformed body is the sender's error, as in a collector
                    self._reply(400, b"bad protobuf", "text/plain")
                    return
                receiver.received.add(request)
                self._reply(200, trace_service_pb2.ExportTraceServiceResponse().SerializeToString(),
                            "application/x-protobuf")

            def _reply(self, code: int, body: bytes, content_type: str) -> None:
                self.send_response(code)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args) -> None:
                pass

        self._server = ThreadingHTTPServer((self.host, self.port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="otlp-http-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join()
            self._thread = None


_STATUS_NAMES = {0: "UNSET", 1: "OK", 2: "ERROR"}
_KIND_NAMES = {1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER", 5: "CONSUMER"}


def as_trace(spans: list[ReceivedSpan]):
    """Received spans of one trace back into a tracer.spans.build.Trace (root first),
    so that the checks written for our own traces apply to what a backend got."""
    from tracer.spans.model import Span, SpanEvent, Trace

    ours = []
    for received in spans:
        span = received.span
        ours.append(Span(
            trace_id=received.trace_id, span_id=received.span_id, parent_id=received.parent_id,
            name=span.name, service=str(received.service), start_ns=span.start_time_unix_nano,
            end_ns=span.end_time_unix_nano, kind=_KIND_NAMES.get(span.kind, "INTERNAL"),
            attributes={k: list(v) if isinstance(v, tuple) else v for k, v in received.attributes.items()},
            events=[SpanEvent(e.name, e.time_unix_nano, decode_attributes(e.attributes)) for e in span.events],
            status=_STATUS_NAMES[span.status.code], status_message=span.status.message))
    roots = [s for s in ours if s.parent_id is None]
    assert len(roots) == 1, f"expected one root span, got {[s.name for s in roots]}"
    rest = sorted((s for s in ours if s.parent_id is not None), key=lambda s: (s.start_ns, s.name))
    # the pod's and node's identity: every span's resource, the same for all
    keys = ("host.name", "k8s.node.name", "k8s.pod.uid", "k8s.pod.name", "k8s.namespace.name")
    identities = {tuple((k, s.resource.get(k)) for k in keys) for s in spans}
    assert len(identities) == 1, f"spans of one trace with different pod resources: {identities}"
    resource = {k: v for k, v in identities.pop() if v is not None}
    title = f"pod {resource.get('k8s.namespace.name', '?')}/{resource.get('k8s.pod.name', '?')}"
    return Trace(roots[0].trace_id, title, [roots[0], *rest], resource)
