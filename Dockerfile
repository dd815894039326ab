# The code location's image: this project and its pinned dependencies, installed at build time from
# the project's own files; nothing is downloaded when a container starts. Dagster's Helm chart
# (deploy/helm/values.yaml) runs it as the gRPC code server and as every run's Kubernetes Job, passing
# its own arguments (`dagster code-server start ...`, `dagster api execute_run ...`): hence a CMD and
# no ENTRYPOINT. The database is external (DATABASE_URL); the embedded server is not used here.
#
#   docker build -t registry.example.com/clay/clay-pipelines:$(git rev-parse --short HEAD) .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    DAGSTER_HOME=/opt/dagster/dagster_home \
    CLAY_STATE_DIR=/var/lib/clay

WORKDIR /opt/clay
COPY pyproject.toml README.md ./
COPY sql ./sql
COPY clay_pipelines ./clay_pipelines

# Editable, so that the package finds sql/ beside it as in a checkout (settings.PROJECT_ROOT); the
# k8s extra brings dagster-k8s for the K8sRunLauncher. A system user owns only the state folders.
RUN pip install --no-cache-dir -e '.[k8s]' \
    && useradd --system --uid 10001 --no-create-home --home-dir /var/lib/clay clay \
    && mkdir -p /opt/dagster/dagster_home /var/lib/clay \
    && chown clay:clay /opt/dagster/dagster_home /var/lib/clay

USER 10001
EXPOSE 4000
CMD ["dagster", "code-server", "start", "-h", "0.0.0.0", "-p", "4000", "-m", "clay_pipelines.definitions"]
