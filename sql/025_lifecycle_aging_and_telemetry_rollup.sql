-- The daily aging and the telemetry rollup, measured at 1,000,000 executions.
--
-- 1. A vector written to a WARM or COLD row (a re-embed) is made compact again by the daily aging.
--    Finding those rows scanned the whole table (request_embedding IS NOT NULL is no index's key):
--    this partial index holds only such rows, so it is empty on most days and costs nothing to read.
SET LOCAL ROLE clay_owner;

CREATE INDEX IF NOT EXISTS executions_vector_to_compact_idx ON executions (tenant_id)
  WHERE lifecycle_state IN ('WARM', 'COLD') AND request_embedding IS NOT NULL;
