"""The load generator behind ``bench/load.py``: call scripts, client processes, reports."""
