"""Lifecycle of executions: HOT -> WARM -> COLD -> ARCHIVED -> PRUNED, legal holds, erasure, retention.

Plain logic (no Dagster): policy.py (thresholds), access.py (what an access is, buffered), aging.py
(HOT/WARM/COLD), archive.py (Parquet archives, restore, prune), holds.py, erasure.py, telemetry.py,
systems.py, checks.py, report.py. The migration is sql/018_lifecycle.sql.
"""
