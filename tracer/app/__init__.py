"""The application: the `tracer` command (cli), the long-running daemon with its
metrics, a recording session, `tracer report`, `tracer doctor` and `tracer demo`."""
