"""Detectors: see docs/ARCHITECTURE.md."""
