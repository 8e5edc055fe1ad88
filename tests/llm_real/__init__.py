"""Tests against a real llama.cpp server running a real small model (marker `llm_real`).

The server comes from tests/support/llama_server.py; the model from scripts/local_llm.py.
"""
