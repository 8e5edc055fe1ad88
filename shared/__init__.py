"""Code both processes use: settings, models, the database and Redis connections, the
conversation lifecycle and repositories, schemas, logging, telemetry, metrics, the job
contract, and the LLM clients.

Two parts are here although one process does most with them, and say why: the LLM clients
(`shared/llm`) are the worker's to call, but the API answers which providers this deployment
serves from the same registry (`served_providers`), so a submission the workers could not
generate is refused at once; the metrics (`shared/metrics.py`) are one factory for both
processes' registries, so a metric's name and labels are defined once, whoever exports it.
"""
