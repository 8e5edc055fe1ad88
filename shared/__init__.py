"""Code shared by the API and the worker: settings, models, database, services, LLM client."""
