"""Kernel benchmark suites: each module has run(rec, device, size) and records every implementation of one kernel side by side."""
