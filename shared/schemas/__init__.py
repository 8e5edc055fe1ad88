"""Pydantic request/response schemas shared by the API and the worker."""
