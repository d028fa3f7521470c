"""Benchmarks of trio_supervise against bare-Trio baselines doing the same work.

Run them all with ``python -m benchmarks`` (or ``python benchmarks/run.py``); ``--quick``
runs every benchmark with tiny sizes (for the test suite). See ``benchmarks/README.md``.

Every result is printed as one line ``metric value unit``; lines starting with ``#`` are
human-readable comments (the PASS/FAIL summary).
"""
