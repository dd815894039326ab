-- Lifecycle of executions: HOT -> WARM -> COLD -> ARCHIVED -> PRUNED, each with a physical meaning,
-- under legal holds, with an independent count of every row ever written.
--
--   HOT       the whole row as written.
--   WARM      the whole row; its vector kept as halfvec in request_embedding_compact (half the bytes),
--             request_embedding NULL.
--   COLD      as WARM, and the bulky content (input_data, output_data, user_feedback,
--             suggested_improvements) moved to execution_cold_content, compressed.
--   ARCHIVED  a tombstone: content and vectors cleared, the row written to a verified Parquet file
--             (lifecycle_archives); every other column kept, so foreign keys, rollups and receipts hold.
--   PRUNED    the archive file deleted after the retention period; the tombstone stays.
SET LOCAL ROLE clay_owner;

-- ---------------------------------------------------------------------------------------------
-- Per-tenant thresholds. A tenant may keep data longer, never shorter than the platform's minimum.

CREATE TABLE IF NOT EXISTS public.lifecycle_policies (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  warm_after_days integer NOT NULL DEFAULT 30 CHECK (warm_after_days >= 30),
  cold_after_days integer NOT NULL DEFAULT 90 CHECK (cold_after_days >= 90),
  archive_after_days integer NOT NULL DEFAULT 365 CHECK (archive_after_days >= 365),
  retention_years integer NOT NULL DEFAULT 7 CHECK (retention_years >= 7),
  updated_by text NOT NULL,
  updated_at timestamp with time zone NOT NULL DEFAULT now(),
  CHECK (warm_after_days < cold_after_days AND cold_after_days < archive_after_days)
);
SELECT public.clay_enable_tenant_isolation('public.lifecycle_policies', ARRAY['SELECT', 'INSERT', 'UPDATE']);

-- ---------------------------------------------------------------------------------------------
-- Archives: one Parquet file and its manifest per row; the executions it holds point at it.

CREATE TABLE IF NOT EXISTS public.lifecycle_archives (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  month date NOT NULL CHECK (extract(day FROM month) = 1),
  uri text NOT NULL,
  manifest_uri text NOT NULL,
  schema_version integer NOT NULL,
  row_count integer NOT NULL CHECK (row_count > 0),
  bytes bigint,
  sha256 text CHECK (sha256 ~ '^[0-9a-f]{64}$'),
  -- writing: recorded before the file is written (a run killed here is found and redone);
  -- archived: verified and its rows tombstoned; pruned: file deleted after retention;
  -- discarded: a half-written or superseded file, deleted.
  status text NOT NULL DEFAULT 'writing' CHECK (status IN ('writing', 'archived', 'pruned', 'discarded')),
  created_at timestamp with time zone NOT NULL DEFAULT now(),
  archived_at timestamp with time zone,
  pruned_at timestamp with time zone,
  CHECK (status <> 'archived' OR (archived_at IS NOT NULL AND sha256 IS NOT NULL)),
  CHECK (status <> 'pruned' OR (archived_at IS NOT NULL AND pruned_at IS NOT NULL))
);
CREATE INDEX IF NOT EXISTS lifecycle_archives_tenant_month_idx ON lifecycle_archives (tenant_id, month, status);
SELECT public.clay_enable_tenant_isolation('public.lifecycle_archives', ARRAY['SELECT', 'INSERT', 'UPDATE']);

-- ---------------------------------------------------------------------------------------------
-- executions: additions only. Nothing the specification defines changes.

ALTER TABLE public.executions
  ADD COLUMN IF NOT EXISTS request_embedding_compact halfvec,           -- WARM and COLD: the vector, half precision
  ADD COLUMN IF NOT EXISTS archive_id uuid REFERENCES lifecycle_archives(id),
  ADD COLUMN IF NOT EXISTS content_erased_at timestamp with time zone;  -- erasure on request
SELECT public.clay_require_same_tenant('public.executions', 'archive_id', 'public.lifecycle_archives');
CREATE INDEX IF NOT EXISTS executions_archive_idx ON executions (archive_id) WHERE archive_id IS NOT NULL;

-- Only the lifecycle jobs remove content, and they keep the row: the application deletes nothing.
REVOKE DELETE ON public.executions FROM clay_app;

-- COLD content. toast_tuple_target 128 makes PostgreSQL compress a row's values as soon as the row
-- passes 128 bytes (the default waits for ~2 kB, which these rows rarely reach).
CREATE TABLE IF NOT EXISTS public.execution_cold_content (
  execution_id uuid PRIMARY KEY REFERENCES executions(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  input_data jsonb,
  output_data jsonb,
  user_feedback text,
  suggested_improvements jsonb,
  moved_at timestamp with time zone NOT NULL DEFAULT now()
) WITH (toast_tuple_target = 128);
SELECT public.clay_enable_tenant_isolation('public.execution_cold_content');
SELECT public.clay_require_same_tenant('public.execution_cold_content', 'execution_id', 'public.executions');
DO $$
BEGIN
  -- lz4 where the server was built with it (Supabase is); pglz otherwise.
  IF EXISTS (SELECT 1 FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)) THEN
    ALTER TABLE public.execution_cold_content
      ALTER COLUMN input_data SET COMPRESSION lz4,
      ALTER COLUMN output_data SET COMPRESSION lz4,
      ALTER COLUMN user_feedback SET COMPRESSION lz4,
      ALTER COLUMN suggested_improvements SET COMPRESSION lz4;
  END IF;
END
$$;

-- Accesses (a person or a client reading an execution), buffered: applied in one set-based
-- statement per batch by the lifecycle job, so that reads never cause an UPDATE storm.
CREATE TABLE IF NOT EXISTS public.execution_access_buffer (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  execution_id uuid NOT NULL REFERENCES executions(id) ON DELETE CASCADE,
  kind text NOT NULL CHECK (kind IN ('show', 'export', 'receipt_check', 'restore')),
  accessed_at timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS execution_access_buffer_tenant_idx ON execution_access_buffer (tenant_id, id);
SELECT public.clay_enable_tenant_isolation('public.execution_access_buffer', ARRAY['SELECT', 'INSERT', 'DELETE']);
SELECT public.clay_require_same_tenant('public.execution_access_buffer', 'execution_id', 'public.executions');

-- ---------------------------------------------------------------------------------------------
-- Legal holds. Never deleted; a release is recorded on the hold.

CREATE TABLE IF NOT EXISTS public.legal_holds (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  scope text NOT NULL CHECK (scope IN ('tenant', 'system', 'time_range', 'executions')),
  system_id uuid REFERENCES systems(id),
  range_start timestamp with time zone,   -- executions.started_at in [range_start, range_end)
  range_end timestamp with time zone,
  execution_ids uuid[],
  reason text NOT NULL CHECK (btrim(reason) <> ''),
  placed_by text NOT NULL CHECK (btrim(placed_by) <> ''),
  placed_at timestamp with time zone NOT NULL DEFAULT now(),
  released_by text CHECK (btrim(released_by) <> ''),
  released_at timestamp with time zone,
  CHECK ((released_by IS NULL) = (released_at IS NULL)),
  CHECK (CASE scope
    WHEN 'tenant' THEN system_id IS NULL AND range_start IS NULL AND range_end IS NULL AND execution_ids IS NULL
    WHEN 'system' THEN system_id IS NOT NULL AND range_start IS NULL AND range_end IS NULL AND execution_ids IS NULL
    WHEN 'time_range' THEN system_id IS NULL AND execution_ids IS NULL AND range_start < range_end
    WHEN 'executions' THEN system_id IS NULL AND range_start IS NULL AND range_end IS NULL
                           AND cardinality(execution_ids) > 0 AND array_position(execution_ids, NULL) IS NULL
  END)
);
CREATE INDEX IF NOT EXISTS legal_holds_in_force_idx ON legal_holds (tenant_id) WHERE released_at IS NULL;
SELECT public.clay_enable_tenant_isolation('public.legal_holds', ARRAY['SELECT', 'INSERT', 'UPDATE']);
SELECT public.clay_require_same_tenant('public.legal_holds', 'system_id', 'public.systems', true);
REVOKE DELETE ON public.legal_holds FROM clay_maintenance;

-- A hold's terms never change; it is released once.
CREATE OR REPLACE FUNCTION public.clay_legal_hold_immutable() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
  BEGIN
    IF OLD.released_at IS NOT NULL THEN
      RAISE EXCEPTION 'legal hold % was already released', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    IF (NEW.tenant_id, NEW.scope, NEW.system_id, NEW.range_start, NEW.range_end, NEW.execution_ids, NEW.reason,
        NEW.placed_by, NEW.placed_at)
       IS DISTINCT FROM (OLD.tenant_id, OLD.scope, OLD.system_id, OLD.range_start, OLD.range_end,
        OLD.execution_ids, OLD.reason, OLD.placed_by, OLD.placed_at) THEN
      RAISE EXCEPTION 'legal hold %: only its release may be recorded', OLD.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS legal_holds_immutable ON public.legal_holds;
CREATE TRIGGER legal_holds_immutable BEFORE UPDATE ON public.legal_holds
  FOR EACH ROW EXECUTE FUNCTION public.clay_legal_hold_immutable();

-- ---------------------------------------------------------------------------------------------
-- The audit of every lifecycle run and request: append-only.

CREATE TABLE IF NOT EXISTS public.lifecycle_audit (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  run_id text NOT NULL,
  action text NOT NULL CHECK (action IN (
    'access', 'aging', 'archive', 'restore', 'prune', 'erase', 'hold_place', 'hold_release', 'telemetry_rollup',
    'dream_retention')),
  from_state text,
  to_state text,
  rows bigint NOT NULL CHECK (rows >= 0),
  dry_run boolean NOT NULL DEFAULT false,
  actor text NOT NULL,
  detail jsonb NOT NULL DEFAULT '{}'::jsonb,
  recorded_at timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS lifecycle_audit_tenant_idx ON lifecycle_audit (tenant_id, recorded_at);
SELECT public.clay_enable_tenant_isolation('public.lifecycle_audit', ARRAY['SELECT', 'INSERT']);
REVOKE UPDATE, DELETE ON public.lifecycle_audit FROM clay_maintenance;

-- ---------------------------------------------------------------------------------------------
-- Telemetry older than the configured age, rolled up per day and tool (then the raw rows go).

CREATE TABLE IF NOT EXISTS public.mcp_telemetry_daily (
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  day date NOT NULL,
  server_name text NOT NULL,
  tool_name text NOT NULL,
  calls bigint NOT NULL CHECK (calls > 0),
  errors bigint NOT NULL CHECK (errors >= 0 AND errors <= calls),
  p50_ms numeric,
  p95_ms numeric,
  max_ms numeric,
  rolled_up_at timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, day, server_name, tool_name)
);
SELECT public.clay_enable_tenant_isolation('public.mcp_telemetry_daily', ARRAY['SELECT', 'INSERT', 'UPDATE']);

-- ---------------------------------------------------------------------------------------------
-- The independent count of rows ever written (and deleted by maintenance), per tenant, kept by
-- statement-level triggers. Written only by them: the functions run as the maintenance role
-- (SECURITY DEFINER, BYPASSRLS) from the clay_admin schema; the application may read its own row.

CREATE TABLE IF NOT EXISTS public.execution_counts (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id),
  written bigint NOT NULL DEFAULT 0 CHECK (written >= 0),
  deleted bigint NOT NULL DEFAULT 0 CHECK (deleted >= 0)
);
SELECT public.clay_enable_tenant_isolation('public.execution_counts', ARRAY['SELECT']);

RESET ROLE;
SET LOCAL ROLE clay_maintenance;

CREATE OR REPLACE FUNCTION clay_admin.count_written_executions() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
  BEGIN
    INSERT INTO public.execution_counts AS c (tenant_id, written)
      SELECT tenant_id, count(*) FROM new_rows WHERE tenant_id IS NOT NULL GROUP BY tenant_id
      ON CONFLICT (tenant_id) DO UPDATE SET written = c.written + excluded.written;
    RETURN NULL;
  END
  $$;

CREATE OR REPLACE FUNCTION clay_admin.count_deleted_executions() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
  BEGIN
    INSERT INTO public.execution_counts AS c (tenant_id, deleted)
      SELECT tenant_id, count(*) FROM old_rows WHERE tenant_id IS NOT NULL GROUP BY tenant_id
      ON CONFLICT (tenant_id) DO UPDATE SET deleted = c.deleted + excluded.deleted;
    RETURN NULL;
  END
  $$;

-- Whether an execution is under a legal hold in force. Reads every hold of the row's tenant, whoever
-- asks (the maintenance role runs it), and answers only yes or no.
CREATE OR REPLACE FUNCTION clay_admin.execution_held(p_tenant uuid, p_system uuid, p_started timestamptz, p_id uuid)
  RETURNS boolean
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
    SELECT EXISTS (
      SELECT 1 FROM public.legal_holds h
      WHERE h.tenant_id = p_tenant AND h.released_at IS NULL AND (
        h.scope = 'tenant'
        OR (h.scope = 'system' AND h.system_id = p_system)
        OR (h.scope = 'time_range' AND p_started >= h.range_start AND p_started < h.range_end)
        OR (h.scope = 'executions' AND p_id = ANY(h.execution_ids))))
  $$;

-- An archive's retention end: archived_at plus the tenant's retention years (7 unless longer).
CREATE OR REPLACE FUNCTION clay_admin.archive_retained_until(p_archive uuid) RETURNS timestamptz
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
    -- Calendar years in UTC, whatever the session's time zone.
    SELECT ((a.archived_at AT TIME ZONE 'UTC') + make_interval(years => coalesce(p.retention_years, 7))) AT TIME ZONE 'UTC'
    FROM public.lifecycle_archives a LEFT JOIN public.lifecycle_policies p ON p.tenant_id = a.tenant_id
    WHERE a.id = p_archive
  $$;

REVOKE ALL ON FUNCTION clay_admin.count_written_executions() FROM PUBLIC;
REVOKE ALL ON FUNCTION clay_admin.count_deleted_executions() FROM PUBLIC;
REVOKE ALL ON FUNCTION clay_admin.execution_held(uuid, uuid, timestamptz, uuid) FROM PUBLIC;
REVOKE ALL ON FUNCTION clay_admin.archive_retained_until(uuid) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION clay_admin.execution_held(uuid, uuid, timestamptz, uuid) TO clay_app, clay_owner;
GRANT EXECUTE ON FUNCTION clay_admin.archive_retained_until(uuid) TO clay_app, clay_owner;
GRANT EXECUTE ON FUNCTION clay_admin.count_written_executions() TO clay_app, clay_owner;
GRANT EXECUTE ON FUNCTION clay_admin.count_deleted_executions() TO clay_app, clay_owner;
GRANT USAGE ON SCHEMA clay_admin TO clay_owner;

-- The rows already there when this migration runs are counted once (read past row-level security).
INSERT INTO public.execution_counts (tenant_id, written)
  SELECT tenant_id, count(*) FROM public.executions WHERE tenant_id IS NOT NULL GROUP BY tenant_id
  ON CONFLICT (tenant_id) DO NOTHING;

RESET ROLE;
SET LOCAL ROLE clay_owner;

DROP TRIGGER IF EXISTS executions_count_written ON public.executions;
CREATE TRIGGER executions_count_written AFTER INSERT ON public.executions
  REFERENCING NEW TABLE AS new_rows FOR EACH STATEMENT EXECUTE FUNCTION clay_admin.count_written_executions();
DROP TRIGGER IF EXISTS executions_count_deleted ON public.executions;
CREATE TRIGGER executions_count_deleted AFTER DELETE ON public.executions
  REFERENCING OLD TABLE AS old_rows FOR EACH STATEMENT EXECUTE FUNCTION clay_admin.count_deleted_executions();

-- ---------------------------------------------------------------------------------------------
-- The database refuses what a hold or the retention period forbids, whoever asks:
--   * deleting an execution under a hold;
--   * moving one under a hold to ARCHIVED or PRUNED, or erasing its content;
--   * pruning one before its archive's retention period has passed;
--   * clearing content outside the lifecycle's states (a tombstone is ARCHIVED or PRUNED, or erased).

CREATE OR REPLACE FUNCTION public.clay_executions_lifecycle_guard() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
  DECLARE
    retained_until timestamptz;
  BEGIN
    IF TG_OP = 'DELETE' THEN
      IF clay_admin.execution_held(OLD.tenant_id, OLD.system_id, OLD.started_at, OLD.id) THEN
        RAISE EXCEPTION 'execution % is under a legal hold: it cannot be deleted', OLD.id
          USING ERRCODE = 'insufficient_privilege';
      END IF;
      RETURN OLD;
    END IF;
    IF (NEW.lifecycle_state IN ('ARCHIVED', 'PRUNED') AND NEW.lifecycle_state IS DISTINCT FROM OLD.lifecycle_state)
       OR (NEW.content_erased_at IS NOT NULL AND OLD.content_erased_at IS NULL) THEN
      IF clay_admin.execution_held(NEW.tenant_id, NEW.system_id, NEW.started_at, NEW.id) THEN
        RAISE EXCEPTION 'execution % is under a legal hold: it cannot be % ', NEW.id,
          CASE WHEN NEW.lifecycle_state IS DISTINCT FROM OLD.lifecycle_state
               THEN 'moved to ' || NEW.lifecycle_state ELSE 'erased' END
          USING ERRCODE = 'insufficient_privilege';
      END IF;
    END IF;
    IF NEW.lifecycle_state = 'PRUNED' AND OLD.lifecycle_state IS DISTINCT FROM 'PRUNED' THEN
      retained_until := clay_admin.archive_retained_until(NEW.archive_id);
      IF retained_until IS NULL OR now() < retained_until THEN
        RAISE EXCEPTION 'execution % is inside its retention period (until %): it cannot be pruned', NEW.id,
          coalesce(retained_until::text, 'never archived') USING ERRCODE = 'insufficient_privilege';
      END IF;
    END IF;
    IF NEW.lifecycle_state = 'PRUNED' AND OLD.lifecycle_state = 'PRUNED' AND NEW.archive_id IS DISTINCT FROM OLD.archive_id THEN
      RAISE EXCEPTION 'execution % was pruned: its archive cannot change', NEW.id USING ERRCODE = 'check_violation';
    END IF;
    RETURN NEW;
  END
  $$;
-- Row triggers only for the updates that change a lifecycle column (the WHEN clause costs nothing
-- to the embedding and rating writes), and for every delete.
DROP TRIGGER IF EXISTS executions_lifecycle_guard ON public.executions;
CREATE TRIGGER executions_lifecycle_guard BEFORE UPDATE ON public.executions
  FOR EACH ROW
  WHEN (NEW.lifecycle_state IS DISTINCT FROM OLD.lifecycle_state
        OR NEW.content_erased_at IS DISTINCT FROM OLD.content_erased_at
        OR NEW.archive_id IS DISTINCT FROM OLD.archive_id)
  EXECUTE FUNCTION public.clay_executions_lifecycle_guard();
DROP TRIGGER IF EXISTS executions_delete_guard ON public.executions;
CREATE TRIGGER executions_delete_guard BEFORE DELETE ON public.executions
  FOR EACH ROW EXECUTE FUNCTION public.clay_executions_lifecycle_guard();
