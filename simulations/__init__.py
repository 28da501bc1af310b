"""Drivers and command-line tools: Flower simulation runs, benchmarks, data management."""
