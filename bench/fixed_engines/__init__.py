"""Bench-only engines with fixed, configurable processing delays.

They plug into the same `shared.worker.WorkerRuntime` as the real services and speak
the same wire messages, so the gateway and the bus cannot tell them apart; what they
save is the models' CPU. A benchmark run with them measures the pipeline itself: what
the gateway and NATS add on top of the engines' configured delays, and how many calls
one gateway replica carries.

They live under ``bench/`` and are started only by ``bench/load.py``: never part of
the product's topology.
"""
