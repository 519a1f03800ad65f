"""Runs that measure: the latency watcher, the benchmark (its paired steps, report and charts), the
decode cost, chaos, soak and the demo's live view."""
