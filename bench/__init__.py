"""Benchmarks: single-call latency (``latency.py``) and load/capacity (``load.py``)."""
