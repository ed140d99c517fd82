"""Measurement: latency (timing), memory, energy, roofline ceilings, provenance, statistics."""
