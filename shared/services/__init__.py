"""Domain services: framework-free, used by the API routes and the worker alike."""
