"""Tests of logging, tracing, metrics and request ids (helpers: tests/support/log_capture.py)."""
