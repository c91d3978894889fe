"""Coverage-guided fuzz harnesses (atheris) for the decoders that read hostile peer bytes.

See ``_harness`` for how a harness runs and ``tests/unit/test_fuzz_regressions.py`` for how CI
replays the committed corpora and crashes without atheris.
"""
