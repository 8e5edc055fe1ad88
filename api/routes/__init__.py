"""Thin routers: parse input, call a shared service, shape the response."""
