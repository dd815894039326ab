"""clay_pipelines: the Dagster project that runs the platform's memory in PostgreSQL + pgvector."""

import warnings

# Dagster marks BackfillPolicy beta and loading definitions from a module preview in this release;
# the notices are for Dagster's developers, not for the people running the pipelines. Once, here.
warnings.filterwarnings("ignore", message=r".*is currently in (beta|preview).*")

__version__ = "0.1.0"
