"""`clay deploy`: Dagster's production topology on one host, with steps on Celery workers.

topology.py starts and stops the processes (PostgreSQL listening on TCP, Redis, the code location's
gRPC server, the webserver, the daemon, the workers), instance.py writes the deployment's
dagster.yaml and workspace.yaml, namespaces.py gives a worker a network and mount namespace of its
own, celery_app.py is the workers' Celery app.
"""
