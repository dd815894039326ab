-- Btree indexes: one leading with tenant_id on every tenant table (row-level security adds
-- tenant_id = ... to every query), plus those the specification's monitoring queries need.
SET LOCAL ROLE clay_owner;

CREATE INDEX IF NOT EXISTS systems_tenant_idx ON systems (tenant_id, status);

CREATE INDEX IF NOT EXISTS executions_tenant_started_idx ON executions (tenant_id, started_at DESC);
CREATE INDEX IF NOT EXISTS executions_tenant_system_idx ON executions (tenant_id, system_id, started_at);
CREATE INDEX IF NOT EXISTS executions_tenant_lifecycle_idx
  ON executions (tenant_id, lifecycle_state, last_accessed_at);
-- "Clay Router Performance": started_at window, grouped by day, counted by status.
CREATE INDEX IF NOT EXISTS executions_started_status_idx ON executions (started_at, status);

CREATE INDEX IF NOT EXISTS routing_rules_tenant_active_idx ON routing_rules (tenant_id, is_active);

CREATE INDEX IF NOT EXISTS dreams_tenant_dreamed_idx ON dreams (tenant_id, dreamed_at DESC);
-- "TARS Dream Promotion Rate": dreamed_at window.
CREATE INDEX IF NOT EXISTS dreams_dreamed_at_idx ON dreams (dreamed_at);

CREATE INDEX IF NOT EXISTS amendments_tenant_system_idx
  ON constitutional_amendments (tenant_id, system_id, approved_at DESC);

-- Budget enforcement and "Resource Usage Alert": tenant, type, window.
CREATE INDEX IF NOT EXISTS resources_tenant_type_window_idx
  ON resources (tenant_id, resource_type, window_type, window_start, window_end);

-- "Entries by source file" and "Total payroll by month".
CREATE INDEX IF NOT EXISTS payroll_entries_tenant_source_idx ON payroll_entries (tenant_id, source_file);
CREATE INDEX IF NOT EXISTS payroll_entries_tenant_date_idx ON payroll_entries (tenant_id, date);

CREATE INDEX IF NOT EXISTS mcp_telemetry_tenant_time_idx ON mcp_telemetry_log (tenant_id, timestamp DESC);
-- "Find slow tools" and "Error rate by tool".
CREATE INDEX IF NOT EXISTS mcp_telemetry_server_tool_time_idx
  ON mcp_telemetry_log (server_name, tool_name, timestamp);
