"""Throughput and accuracy-parity benchmarks of jem's data paths against a peer-style pipeline.

``python -m benchmarks.run --help`` (views/s, memory, ratios) and ``python -m benchmarks.parity
--help`` (kNN accuracy with the same budget); results and how to read them: BENCHMARKS.md.
"""
