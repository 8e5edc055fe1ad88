"""Developer commands, run from the repository root as modules: `python -m scripts.soak`.

They may import the project (`shared`, `api`, `worker`) and the test harness (`tests.support`);
the tests import from here only a script's own functions. Two also run as files:
`prestart.py`, which the API image carries alone, and `local_llm.py`, which imports nothing
of the project (`make llm_local`, `make run LLM=local`).
"""
