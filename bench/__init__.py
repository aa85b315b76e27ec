"""Loopback benchmarks: each module starts robustmq and a reference server and prints both figures.

Run one as ``python -m bench.<name>``; every run is bounded in time.
"""
