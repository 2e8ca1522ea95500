"""An OTLP/HTTP traces endpoint that counts and discards what it receives, for benchmarking with
tracing on (`make bench` with OTEL_EXPORTER_OTLP_TRACES_ENDPOINT pointing here):

    python -m bench.otlp_sink --port 4318 --seconds 600 &
    OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=http://127.0.0.1:4318/v1/traces make bench

It listens on 127.0.0.1 only, stops by itself after `--seconds`, and prints the span count.
"""

from __future__ import annotations

import argparse
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--seconds", type=float, default=600.0)
    args = parser.parse_args()
    counts = {"spans": 0, "requests": 0}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            request = ExportTraceServiceRequest.FromString(body)
            spans = sum(len(s.spans) for r in request.resource_spans for s in r.scope_spans)
            with lock:
                counts["spans"] += spans
                counts["requests"] += 1
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    timer = threading.Timer(args.seconds, server.shutdown)
    timer.start()
    try:
        server.serve_forever()
    finally:
        timer.cancel()
        server.server_close()
        print(f"otlp_sink: {counts['spans']} spans in {counts['requests']} requests", flush=True)


if __name__ == "__main__":
    main()
