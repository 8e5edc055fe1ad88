"""Developer commands, run from the repository root as modules: `python -m scripts.soak`.

A module here may import the project (`shared`, `api`, `worker`) and the test harness
(`tests.support`); nothing under `tests/` imports more from here than a script's own functions.
`prestart.py` is the exception that runs as a file: the API image carries it alone.
"""
