-- The daily aging and the telemetry rollup, measured at 1,000,000 executions.
--
-- 1. A vector written to a WARM or COLD row (a re-embed) is made compact again by the daily aging.
--    Finding those rows scanned the whole table (request_embedding IS NOT NULL is no index's key):
--    this partial index holds only such rows, so it is empty on most days and costs nothing to read.
SET LOCAL ROLE clay_owner;

CREATE INDEX IF NOT EXISTS executions_vector_to_compact_idx ON executions (tenant_id)
  WHERE lifecycle_state IN ('WARM', 'COLD') AND request_embedding IS NOT NULL;

-- 2. mcp_telemetry_daily keeps, beside its figures, every call's outcome and latency as a histogram:
--    the distinct (success, execution_time_ms) pairs of the day's calls and how many calls had each.
--    From it the monitoring assets compute over rolled-up days exactly what they computed over the raw
--    rows (the specification's error rate, the average and p95 of successful calls, over any set of
--    whole days), and a day rolled up again (late rows) is recomputed exactly rather than averaged.
--    `errors` counts calls with success = false, the specification's definition (a call of unknown
--    outcome, success NULL, is not an error). Rows rolled up before this migration have no histogram.
ALTER TABLE public.mcp_telemetry_daily
  ADD COLUMN IF NOT EXISTS latency_success boolean[],
  ADD COLUMN IF NOT EXISTS latency_ms numeric[],
  ADD COLUMN IF NOT EXISTS latency_calls bigint[];
ALTER TABLE public.mcp_telemetry_daily DROP CONSTRAINT IF EXISTS mcp_telemetry_daily_histogram_shape;
ALTER TABLE public.mcp_telemetry_daily ADD CONSTRAINT mcp_telemetry_daily_histogram_shape CHECK (
  cardinality(latency_success) = cardinality(latency_ms) AND cardinality(latency_ms) = cardinality(latency_calls));
