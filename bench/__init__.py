"""Benchmarks, never run by pytest and never gated on wall time (STYLE 2.10).

``python -m bench ingest`` is the side-by-side ingest harness (``bench/ingest.py``);
``bench/micro/`` holds micro-benchmarks that print JSON; ``bench/locustfile.py`` drives
DICOM load through our SCU core.
"""
