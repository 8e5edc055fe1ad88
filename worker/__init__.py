"""The worker process: takes generation jobs from Redis and writes answers to PostgreSQL."""
