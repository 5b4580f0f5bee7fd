"""The path from event bytes to traces, live and in replay: sanitize, decode,
reorder by kernel time, correlate, enrich, build; and the recording file."""
