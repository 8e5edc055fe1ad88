"""`make bench`: the API and the worker measured against a floor app, on this machine.

Never part of the test suite. `python -m bench --help` for the options; docs/benchmarks.md
holds the last full run and says how each number is measured.
"""
