"""Variants, one folder per axis, one file per variant; each registers itself in lab.registry."""
