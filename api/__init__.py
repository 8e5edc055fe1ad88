"""The HTTP API process."""
