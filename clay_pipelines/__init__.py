"""clay_pipelines: the Dagster project that runs the platform's memory in PostgreSQL + pgvector."""

__version__ = "0.1.0"
