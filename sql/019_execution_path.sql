-- The execution path: route -> reserve budget -> execute -> complete (settle) -> signed receipt.
--
-- Everything a client in any language needs is a SQL function here (schema public, SECURITY
-- INVOKER, so row-level security applies to the caller): clay_complete_execution,
-- clay_rate_execution, clay_reserve_budget, clay_settle_reservation, clay_release_reservation,
-- clay_expire_reservations. Callers of invoker functions hold the table privileges themselves, so
-- the guarantees (a completion is final, a rating is given once, a signed receipt never changes, a
-- reservation moves only forward, an alert is raised once per window) are triggers, not only code
-- in the functions. Receipts are signed outside the database (the private key never enters it).
SET LOCAL ROLE clay_owner;

-- ---------------------------------------------------------------------------------------------
-- 1. Tables

-- Receipt signing keys: public halves only, kept while a receipt or checkpoint they signed exists
-- (the foreign keys below refuse to delete a key still in use).
CREATE TABLE IF NOT EXISTS public.receipt_keys (
  key_id text PRIMARY KEY,
  algorithm text NOT NULL DEFAULT 'ed25519' CHECK (algorithm = 'ed25519'),
  public_key text NOT NULL,                       -- the raw 32-byte Ed25519 public key, base64
  created_at timestamp with time zone NOT NULL DEFAULT now(),
  retired_at timestamp with time zone             -- no longer signs; still verifies
);
REVOKE ALL ON public.receipt_keys FROM PUBLIC;
GRANT SELECT, INSERT ON public.receipt_keys TO clay_app;
GRANT UPDATE (retired_at) ON public.receipt_keys TO clay_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.receipt_keys TO clay_maintenance;

-- A reservation of a tenant's USD budget for one execution: the estimate held against every open
-- usd_budget window (and the system's quota in each window that has one) until it is settled with
-- the actual cost, released, or expired by the sweeper.
CREATE TABLE IF NOT EXISTS public.budget_reservations (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  system_name text NOT NULL,
  estimate_usd numeric NOT NULL CHECK (estimate_usd >= 0),
  window_ids uuid[] NOT NULL DEFAULT '{}',        -- resources rows held, ascending
  quota_window_ids uuid[] NOT NULL DEFAULT '{}',  -- of those, the ones whose system quota was held
  status text NOT NULL DEFAULT 'held' CHECK (status IN ('held', 'settled', 'released', 'expired')),
  actual_usd numeric CHECK (actual_usd IS NULL OR actual_usd >= 0),
  created_at timestamp with time zone NOT NULL DEFAULT now(),
  expires_at timestamp with time zone NOT NULL,
  closed_at timestamp with time zone,
  close_reason text
);
CREATE INDEX IF NOT EXISTS budget_reservations_held_idx ON budget_reservations (tenant_id, expires_at)
  WHERE status = 'held';
SELECT public.clay_enable_tenant_isolation('public.budget_reservations', ARRAY['SELECT', 'INSERT', 'UPDATE']);

-- resources.system_quotas holds per-system limits only; what each system used and holds in a
-- window lives here, one row per (window, system), created on first reservation.
CREATE TABLE IF NOT EXISTS public.resource_system_usage (
  resource_id uuid NOT NULL REFERENCES resources(id) ON DELETE CASCADE,
  system_name text NOT NULL,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  used numeric NOT NULL DEFAULT 0 CHECK (used >= 0),
  reserved numeric NOT NULL DEFAULT 0 CHECK (reserved >= 0),
  updated_at timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (resource_id, system_name)
);
SELECT public.clay_enable_tenant_isolation('public.resource_system_usage', ARRAY['SELECT', 'INSERT', 'UPDATE']);
SELECT public.clay_require_same_tenant('public.resource_system_usage', 'resource_id', 'public.resources');

-- One alert per budget window, raised by the trigger that flips resources.alert_sent (the one alert
-- path); a Dagster sensor turns each new row into a run that notifies and records notified_at.
CREATE TABLE IF NOT EXISTS public.budget_alerts (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  resource_id uuid NOT NULL UNIQUE,               -- no foreign key: raised while the row is inserted
  resource_type text NOT NULL,
  window_type text NOT NULL,
  window_start timestamp with time zone NOT NULL,
  window_end timestamp with time zone NOT NULL,
  total_budget numeric NOT NULL,
  used numeric NOT NULL,
  reserved numeric NOT NULL,
  alert_threshold numeric NOT NULL,
  raised_at timestamp with time zone NOT NULL DEFAULT now(),
  notified_at timestamp with time zone,
  notified_by text
);
SELECT public.clay_enable_tenant_isolation('public.budget_alerts', ARRAY['SELECT', 'INSERT']);

-- The head of each tenant's receipt chain: appends lock this row, so they are serialised.
CREATE TABLE IF NOT EXISTS public.receipt_chains (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  length bigint NOT NULL DEFAULT 0 CHECK (length >= 0),
  head_hash text,
  updated_at timestamp with time zone NOT NULL DEFAULT now()
);
SELECT public.clay_enable_tenant_isolation('public.receipt_chains', ARRAY['SELECT', 'INSERT', 'UPDATE']);

-- Signed statements "tenant T's chain had `length` receipts ending in head_hash at created_at",
-- also exported outside the database; verification compares the chain with the latest one.
CREATE TABLE IF NOT EXISTS public.receipt_checkpoints (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  length bigint NOT NULL CHECK (length >= 0),
  head_hash text,
  key_id text NOT NULL REFERENCES receipt_keys(key_id),
  signature text NOT NULL,
  created_at timestamp with time zone NOT NULL,
  UNIQUE (tenant_id, length)
);
SELECT public.clay_enable_tenant_isolation('public.receipt_checkpoints', ARRAY['SELECT', 'INSERT']);

-- Additions to the specification's executions table.
ALTER TABLE public.executions
  ADD COLUMN IF NOT EXISTS routing_rule_id uuid REFERENCES routing_rules(id),
  ADD COLUMN IF NOT EXISTS constitution_hash text,     -- the effective constitution it ran under
  ADD COLUMN IF NOT EXISTS budget_reservation_id uuid REFERENCES budget_reservations(id),
  ADD COLUMN IF NOT EXISTS receipt_hash text,
  ADD COLUMN IF NOT EXISTS receipt_previous_hash text,
  ADD COLUMN IF NOT EXISTS receipt_key_id text REFERENCES receipt_keys(key_id),
  ADD COLUMN IF NOT EXISTS receipt_seq bigint,          -- position in the tenant's chain, from 1
  ADD COLUMN IF NOT EXISTS receipt_signed_at timestamp with time zone;
CREATE UNIQUE INDEX IF NOT EXISTS executions_receipt_seq_key ON executions (tenant_id, receipt_seq)
  WHERE receipt_seq IS NOT NULL;
CREATE UNIQUE INDEX IF NOT EXISTS executions_budget_reservation_key ON executions (budget_reservation_id)
  WHERE budget_reservation_id IS NOT NULL;
CREATE INDEX IF NOT EXISTS executions_unsigned_idx ON executions (tenant_id, completed_at, id)
  WHERE receipt_signature IS NULL AND completed_at IS NOT NULL;
SELECT public.clay_require_same_tenant('public.executions', 'routing_rule_id', 'public.routing_rules');
SELECT public.clay_require_same_tenant('public.executions', 'budget_reservation_id', 'public.budget_reservations');


-- ---------------------------------------------------------------------------------------------
-- 2. Guarantees (triggers)

-- An execution still waiting for a person's ARM decision: its outcome may still become
-- governance_blocked, and it is not signed until decided.
CREATE OR REPLACE FUNCTION public.clay_awaits_approval(p_status text, p_governance jsonb) RETURNS boolean
  LANGUAGE sql IMMUTABLE
  AS $$
    SELECT p_status IS DISTINCT FROM 'governance_blocked'
       AND coalesce(p_governance->>'requires_approval', 'false') = 'true'
       AND coalesce(p_governance->>'approved_by', '') = ''
       AND coalesce(p_governance->>'decision', '') = ''
  $$;
GRANT EXECUTE ON FUNCTION public.clay_awaits_approval(text, jsonb) TO clay_app, clay_maintenance;

-- A completed execution's outcome is final; a rating is given once; a signed receipt and the
-- fields it covers never change. Lifecycle tombstones may clear content columns (output_data,
-- user_feedback, ...): clearing to NULL is allowed, changing is not.
CREATE OR REPLACE FUNCTION public.clay_execution_guard() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  BEGIN
    IF OLD.completed_at IS NOT NULL THEN
      IF NEW.completed_at IS DISTINCT FROM OLD.completed_at
         OR NEW.cost_usd IS DISTINCT FROM OLD.cost_usd
         OR NEW.error_message IS DISTINCT FROM OLD.error_message
         OR (NEW.output_data IS DISTINCT FROM OLD.output_data AND NEW.output_data IS NOT NULL)
         -- the one change after completion: a person's ARM decision on an execution awaiting it
         OR (NEW.status IS DISTINCT FROM OLD.status
             AND NOT (NEW.status = 'governance_blocked' AND public.clay_awaits_approval(OLD.status, OLD.governance_check)))
         OR (NEW.governance_check IS DISTINCT FROM OLD.governance_check
             AND NOT public.clay_awaits_approval(OLD.status, OLD.governance_check)) THEN
        RAISE EXCEPTION 'execution % was completed at %: its outcome (status, output, cost, completion time) is final',
          OLD.id, OLD.completed_at USING ERRCODE = 'CLY01';
      END IF;
    END IF;
    IF OLD.user_satisfaction IS NOT NULL AND (
         NEW.user_satisfaction IS DISTINCT FROM OLD.user_satisfaction
         OR (NEW.user_feedback IS DISTINCT FROM OLD.user_feedback AND NEW.user_feedback IS NOT NULL)) THEN
      RAISE EXCEPTION 'execution % was already rated % stars: a rating is given once', OLD.id, OLD.user_satisfaction
        USING ERRCODE = 'CLY02';
    END IF;
    IF OLD.receipt_signature IS NOT NULL AND (
         (NEW.tenant_id, NEW.system_id, NEW.system_name, NEW.routing_rule_id, NEW.constitution_hash, NEW.cost_usd,
          NEW.status, NEW.governance_check, NEW.started_at, NEW.completed_at, NEW.receipt_signature,
          NEW.receipt_hash, NEW.receipt_previous_hash, NEW.receipt_key_id, NEW.receipt_seq, NEW.receipt_signed_at)
         IS DISTINCT FROM
         (OLD.tenant_id, OLD.system_id, OLD.system_name, OLD.routing_rule_id, OLD.constitution_hash, OLD.cost_usd,
          OLD.status, OLD.governance_check, OLD.started_at, OLD.completed_at, OLD.receipt_signature,
          OLD.receipt_hash, OLD.receipt_previous_hash, OLD.receipt_key_id, OLD.receipt_seq, OLD.receipt_signed_at)) THEN
      RAISE EXCEPTION 'execution % has a signed receipt: receipts and the fields they cover are append-only', OLD.id
        USING ERRCODE = 'CLY03';
    END IF;
    IF OLD.receipt_signature IS NULL AND NEW.receipt_signature IS NOT NULL AND NEW.completed_at IS NULL THEN
      RAISE EXCEPTION 'execution % is not completed: nothing to sign', OLD.id USING ERRCODE = 'CLY03';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS execution_guard ON public.executions;
CREATE TRIGGER execution_guard BEFORE UPDATE ON public.executions
  FOR EACH ROW EXECUTE FUNCTION public.clay_execution_guard();

-- Signed executions are not deleted by roles under row-level security (the application, Supabase
-- users); the maintenance role (which replaces the sample world) still may.
CREATE OR REPLACE FUNCTION public.clay_signed_execution_kept() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  BEGIN
    IF OLD.receipt_signature IS NOT NULL
       AND NOT coalesce((SELECT r.rolbypassrls FROM pg_roles r WHERE r.rolname = current_user), false) THEN
      RAISE EXCEPTION 'execution % has a signed receipt: it cannot be deleted', OLD.id USING ERRCODE = 'CLY03';
    END IF;
    RETURN OLD;
  END
  $$;
DROP TRIGGER IF EXISTS signed_execution_kept ON public.executions;
CREATE TRIGGER signed_execution_kept BEFORE DELETE ON public.executions
  FOR EACH ROW EXECUTE FUNCTION public.clay_signed_execution_kept();

-- A chain head only moves forward.
CREATE OR REPLACE FUNCTION public.clay_receipt_chain_forward() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
  BEGIN
    IF NEW.tenant_id IS DISTINCT FROM OLD.tenant_id OR NEW.length < OLD.length
       OR (NEW.length = OLD.length AND NEW.head_hash IS DISTINCT FROM OLD.head_hash) THEN
      RAISE EXCEPTION 'a receipt chain only grows (tenant %, length % -> %)', OLD.tenant_id, OLD.length, NEW.length
        USING ERRCODE = 'CLY03';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS receipt_chain_forward ON public.receipt_chains;
CREATE TRIGGER receipt_chain_forward BEFORE UPDATE ON public.receipt_chains
  FOR EACH ROW EXECUTE FUNCTION public.clay_receipt_chain_forward();

-- A reservation moves only forward (held -> settled | released | expired; released or expired ->
-- settled, a late charge), and what it holds never changes.
CREATE OR REPLACE FUNCTION public.clay_reservation_forward() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
  BEGIN
    IF (NEW.tenant_id, NEW.system_name, NEW.estimate_usd, NEW.window_ids, NEW.quota_window_ids, NEW.created_at,
        NEW.expires_at) IS DISTINCT FROM
       (OLD.tenant_id, OLD.system_name, OLD.estimate_usd, OLD.window_ids, OLD.quota_window_ids, OLD.created_at,
        OLD.expires_at)
       OR OLD.status = 'settled'
       OR (OLD.status IN ('released', 'expired') AND NEW.status <> 'settled')
       OR (NEW.status = 'held' AND NEW IS DISTINCT FROM OLD) THEN
      RAISE EXCEPTION 'reservation % is %: it cannot become % or change what it holds', OLD.id, OLD.status, NEW.status
        USING ERRCODE = 'CLY04';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS reservation_forward ON public.budget_reservations;
CREATE TRIGGER reservation_forward BEFORE UPDATE ON public.budget_reservations
  FOR EACH ROW EXECUTE FUNCTION public.clay_reservation_forward();

-- The one alert path: whoever moves a window past its threshold (a reservation, a settlement,
-- billing, the sample world) flips alert_sent in the same row update and raises the alert once.
CREATE OR REPLACE FUNCTION public.clay_budget_alert() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  BEGIN
    IF NOT coalesce(NEW.alert_sent, false) AND NEW.total_budget > 0
       AND (coalesce(NEW.used, 0) + coalesce(NEW.reserved, 0)) / NEW.total_budget >= coalesce(NEW.alert_threshold, 0.80) THEN
      NEW.alert_sent := true;
      INSERT INTO public.budget_alerts (tenant_id, resource_id, resource_type, window_type, window_start, window_end,
                                        total_budget, used, reserved, alert_threshold)
      VALUES (NEW.tenant_id, NEW.id, NEW.resource_type, NEW.window_type, NEW.window_start, NEW.window_end,
              NEW.total_budget, coalesce(NEW.used, 0), coalesce(NEW.reserved, 0), coalesce(NEW.alert_threshold, 0.80))
      ON CONFLICT (resource_id) DO NOTHING;
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS budget_alert ON public.resources;
CREATE TRIGGER budget_alert BEFORE INSERT OR UPDATE OF used, reserved, total_budget, alert_threshold, alert_sent
  ON public.resources FOR EACH ROW EXECUTE FUNCTION public.clay_budget_alert();

-- ---------------------------------------------------------------------------------------------
-- 3. Budget functions

-- The usd_budget quota of a system in a window's system_quotas; NULL when it has none (0 means
-- none too, as the router has always read it).
CREATE OR REPLACE FUNCTION public.clay_usd_quota(p_quotas jsonb, p_system_name text) RETURNS numeric
  LANGUAGE sql IMMUTABLE
  AS $$
    SELECT NULLIF((p_quotas -> p_system_name ->> 'usd_budget')::numeric, 0)
  $$;
GRANT EXECUTE ON FUNCTION public.clay_usd_quota(jsonb, text) TO clay_app, clay_maintenance;

-- Hold p_estimate_usd of the current tenant's budget for a run of p_system_name: against every
-- open usd_budget window and the system's quota in each, all or nothing, each a conditional UPDATE
-- (no read-then-write: a concurrent reservation waits for the row and re-checks the condition).
-- Refusal is an answer (granted false, the scope 'tenant' or 'system' and why), not an error, and
-- leaves nothing behind (the attempt runs in a subtransaction).
CREATE OR REPLACE FUNCTION public.clay_reserve_budget(
  p_system_name text, p_estimate_usd numeric, p_ttl interval DEFAULT interval '15 minutes',
  OUT reservation_id uuid, OUT granted boolean, OUT refused_scope text, OUT refusal text
)
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    tenant uuid := public.clay_current_tenant();
    w record;
    windows uuid[] := '{}';
    quota_windows uuid[] := '{}';
    quotas numeric[] := '{}';
    quota_types text[] := '{}';
    i integer;
  BEGIN
    IF tenant IS NULL THEN
      RAISE EXCEPTION 'clay_reserve_budget: no tenant is set for this transaction' USING ERRCODE = 'insufficient_privilege';
    END IF;
    IF p_system_name IS NULL OR p_estimate_usd IS NULL OR p_estimate_usd < 0 OR p_ttl IS NULL OR p_ttl <= interval '0' THEN
      RAISE EXCEPTION 'clay_reserve_budget: a system name, an estimate >= 0 and a positive time to live are required'
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    BEGIN
      -- Every window row first (ascending id), then every quota row: one lock order for all callers.
      FOR w IN SELECT r.id, r.window_type, r.total_budget, public.clay_usd_quota(r.system_quotas, p_system_name) AS quota
               FROM public.resources r
               WHERE r.tenant_id = tenant AND r.resource_type = 'usd_budget'
                 AND r.window_start <= now() AND r.window_end > now()
               ORDER BY r.id LOOP
        UPDATE public.resources SET reserved = reserved + p_estimate_usd, updated_at = now()
        WHERE id = w.id AND coalesce(used, 0) + reserved + p_estimate_usd <= total_budget;
        IF NOT FOUND THEN
          RAISE EXCEPTION USING ERRCODE = 'CLY10', HINT = 'tenant', MESSAGE = format(
            'the tenant''s %s USD budget (%s) cannot hold %s more', w.window_type, w.total_budget, p_estimate_usd);
        END IF;
        windows := windows || w.id;
        IF w.quota IS NOT NULL THEN
          quota_windows := quota_windows || w.id;
          quotas := quotas || w.quota;
          quota_types := quota_types || w.window_type;
        END IF;
      END LOOP;
      FOR i IN 1 .. coalesce(array_length(quota_windows, 1), 0) LOOP
        INSERT INTO public.resource_system_usage (resource_id, system_name, tenant_id)
        VALUES (quota_windows[i], p_system_name, tenant) ON CONFLICT DO NOTHING;
        UPDATE public.resource_system_usage SET reserved = reserved + p_estimate_usd, updated_at = now()
        WHERE resource_id = quota_windows[i] AND system_name = p_system_name
          AND used + reserved + p_estimate_usd <= quotas[i];
        IF NOT FOUND THEN
          RAISE EXCEPTION USING ERRCODE = 'CLY10', HINT = 'system', MESSAGE = format(
            '%s''s %s quota (%s USD) cannot hold %s more', p_system_name, quota_types[i], quotas[i], p_estimate_usd);
        END IF;
      END LOOP;
      INSERT INTO public.budget_reservations (tenant_id, system_name, estimate_usd, window_ids, quota_window_ids, expires_at)
      VALUES (tenant, p_system_name, p_estimate_usd, windows, quota_windows, now() + p_ttl)
      RETURNING id INTO reservation_id;
      granted := true;
    EXCEPTION WHEN SQLSTATE 'CLY10' THEN
      GET STACKED DIAGNOSTICS refusal = MESSAGE_TEXT, refused_scope = PG_EXCEPTION_HINT;
      reservation_id := NULL;
      granted := false;
    END;
  END
  $$;

-- Close a reservation: 'settled' (charge p_actual_usd) or 'released' / 'expired' (charge nothing).
-- Exactly once: the reservation row is locked and its status decides. A reservation released or
-- expired before the execution completed is still charged when it is settled (a late charge:
-- used grows, nothing held is given back twice). Returns whether this call changed anything.
CREATE OR REPLACE FUNCTION public.clay_close_reservation(
  p_reservation_id uuid, p_outcome text, p_actual_usd numeric, p_reason text
) RETURNS boolean
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    r public.budget_reservations;
    held boolean;
    charge numeric := CASE WHEN p_outcome = 'settled' THEN p_actual_usd ELSE 0 END;
  BEGIN
    IF p_outcome NOT IN ('settled', 'released', 'expired') OR (p_outcome = 'settled' AND (p_actual_usd IS NULL OR p_actual_usd < 0)) THEN
      RAISE EXCEPTION 'clay_close_reservation: outcome settled (with an actual cost >= 0), released or expired'
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT * INTO r FROM public.budget_reservations WHERE id = p_reservation_id FOR UPDATE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no budget reservation %', p_reservation_id USING ERRCODE = 'no_data_found';
    END IF;
    IF r.status = 'settled' OR (r.status <> 'held' AND p_outcome <> 'settled') THEN
      RETURN false;
    END IF;
    held := r.status = 'held';
    -- The reservation's lock order: its windows, then its quota rows, ascending.
    PERFORM 1 FROM public.resources WHERE id = ANY(r.window_ids) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM public.resource_system_usage
    WHERE resource_id = ANY(r.quota_window_ids) AND system_name = r.system_name ORDER BY resource_id FOR UPDATE;
    UPDATE public.resources
    SET used = coalesce(used, 0) + charge,
        reserved = CASE WHEN held THEN greatest(reserved - r.estimate_usd, 0) ELSE reserved END,
        updated_at = now()
    WHERE id = ANY(r.window_ids);
    UPDATE public.resource_system_usage
    SET used = used + charge,
        reserved = CASE WHEN held THEN greatest(reserved - r.estimate_usd, 0) ELSE reserved END,
        updated_at = now()
    WHERE resource_id = ANY(r.quota_window_ids) AND system_name = r.system_name;
    UPDATE public.budget_reservations
    SET status = p_outcome, actual_usd = CASE WHEN p_outcome = 'settled' THEN p_actual_usd END, closed_at = now(),
        close_reason = CASE WHEN held THEN p_reason ELSE format('%s after %s', p_reason, r.status) END
    WHERE id = r.id;
    RETURN true;
  END
  $$;

CREATE OR REPLACE FUNCTION public.clay_settle_reservation(p_reservation_id uuid, p_actual_usd numeric)
  RETURNS boolean
  LANGUAGE sql VOLATILE SECURITY INVOKER
  SET search_path = pg_catalog, public
  AS $$ SELECT public.clay_close_reservation(p_reservation_id, 'settled', p_actual_usd, 'settled') $$;

CREATE OR REPLACE FUNCTION public.clay_release_reservation(p_reservation_id uuid, p_reason text DEFAULT 'cancelled')
  RETURNS boolean
  LANGUAGE sql VOLATILE SECURITY INVOKER
  SET search_path = pg_catalog, public
  AS $$ SELECT public.clay_close_reservation(p_reservation_id, 'released', NULL, coalesce(p_reason, 'cancelled')) $$;

-- The sweeper: held reservations past their expiry (of the current tenant, or every tenant for the
-- maintenance role) released as 'expired'. Reservations a settlement holds right now are skipped.
-- Rows are locked in the same order as reservations take them (windows, then quotas, ascending).
CREATE OR REPLACE FUNCTION public.clay_expire_reservations(p_limit integer DEFAULT 1000) RETURNS integer
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    ids uuid[];
    rid uuid;
  BEGIN
    SELECT array_agg(id ORDER BY id) INTO ids FROM (
      SELECT id FROM public.budget_reservations
      WHERE status = 'held' AND expires_at < now()
      ORDER BY expires_at LIMIT p_limit
      FOR UPDATE SKIP LOCKED) expired;
    IF ids IS NULL THEN
      RETURN 0;
    END IF;
    PERFORM 1 FROM public.resources WHERE id IN (
      SELECT unnest(window_ids) FROM public.budget_reservations WHERE id = ANY(ids)) ORDER BY id FOR UPDATE;
    PERFORM 1 FROM public.resource_system_usage u WHERE (u.resource_id, u.system_name) IN (
      SELECT unnest(b.quota_window_ids), b.system_name FROM public.budget_reservations b WHERE b.id = ANY(ids))
      ORDER BY u.resource_id, u.system_name FOR UPDATE;
    FOREACH rid IN ARRAY ids LOOP
      PERFORM public.clay_close_reservation(rid, 'expired', NULL, 'expired');
    END LOOP;
    RETURN cardinality(ids);
  END
  $$;

-- ---------------------------------------------------------------------------------------------
-- 4. Completion and rating

-- Report an execution's outcome. Once: the same values again change nothing (changed false), other
-- values are refused (SQLSTATE CLY01; the execution_guard trigger refuses them for direct UPDATEs
-- too). p_completed_at NULL: now() the first time, not compared on a repeat. Settles the
-- execution's budget reservation with the actual cost (0 when none is given).
CREATE OR REPLACE FUNCTION public.clay_complete_execution(
  p_execution_id uuid, p_status text, p_output jsonb DEFAULT NULL, p_cost_usd numeric DEFAULT NULL,
  p_completed_at timestamp with time zone DEFAULT NULL, p_error_message text DEFAULT NULL,
  OUT execution_id uuid, OUT changed boolean, OUT reservation_settled boolean
)
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    e record;
  BEGIN
    IF p_status IS NULL OR p_status NOT IN ('success', 'failed', 'partial', 'timeout', 'governance_blocked') THEN
      RAISE EXCEPTION 'status % is not one of success, failed, partial, timeout, governance_blocked', p_status
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    IF p_cost_usd < 0 THEN
      RAISE EXCEPTION 'cost_usd % is negative', p_cost_usd USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x.id, x.status, x.output_data, x.cost_usd, x.completed_at, x.error_message, x.started_at,
           x.budget_reservation_id
    INTO e FROM public.executions x WHERE x.id = p_execution_id FOR UPDATE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no execution %', p_execution_id USING ERRCODE = 'no_data_found';
    END IF;
    execution_id := e.id;
    reservation_settled := false;
    IF e.completed_at IS NOT NULL THEN
      IF (e.status, e.output_data, e.cost_usd, e.error_message) IS NOT DISTINCT FROM
         (p_status, p_output, p_cost_usd, p_error_message)
         AND (p_completed_at IS NULL OR p_completed_at = e.completed_at) THEN
        changed := false;
        RETURN;
      END IF;
      RAISE EXCEPTION 'execution % was already completed (%, cost %, at %): completing it with other values is refused',
        e.id, e.status, e.cost_usd, e.completed_at USING ERRCODE = 'CLY01';
    END IF;
    IF coalesce(p_completed_at, now()) < e.started_at THEN
      RAISE EXCEPTION 'completed_at % is before the execution started (%)', p_completed_at, e.started_at
        USING ERRCODE = 'invalid_parameter_value';
    END IF;
    UPDATE public.executions
    SET status = p_status, output_data = p_output, cost_usd = p_cost_usd, error_message = p_error_message,
        completed_at = coalesce(p_completed_at, now())
    WHERE id = e.id;
    changed := true;
    IF e.budget_reservation_id IS NOT NULL THEN
      reservation_settled := public.clay_settle_reservation(e.budget_reservation_id, coalesce(p_cost_usd, 0));
    END IF;
  END
  $$;

-- A person's 1-5 stars (and words) on a completed execution; the same again is a no-op, another
-- rating is refused (CLY02, also by the trigger).
CREATE OR REPLACE FUNCTION public.clay_rate_execution(
  p_execution_id uuid, p_stars integer, p_feedback text DEFAULT NULL
) RETURNS boolean
  LANGUAGE plpgsql VOLATILE SECURITY INVOKER
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    e record;
  BEGIN
    IF p_stars IS NULL OR p_stars NOT BETWEEN 1 AND 5 THEN
      RAISE EXCEPTION 'a rating is 1 to 5 stars, got %', p_stars USING ERRCODE = 'invalid_parameter_value';
    END IF;
    SELECT x.id, x.completed_at, x.user_satisfaction, x.user_feedback INTO e
    FROM public.executions x WHERE x.id = p_execution_id FOR UPDATE;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'no execution %', p_execution_id USING ERRCODE = 'no_data_found';
    END IF;
    IF e.completed_at IS NULL THEN
      RAISE EXCEPTION 'execution % is not completed yet: rate it once it is', e.id USING ERRCODE = 'CLY02';
    END IF;
    IF e.user_satisfaction IS NOT NULL THEN
      IF e.user_satisfaction = p_stars AND e.user_feedback IS NOT DISTINCT FROM p_feedback THEN
        RETURN false;
      END IF;
      RAISE EXCEPTION 'execution % was already rated % stars: a rating is given once', e.id, e.user_satisfaction
        USING ERRCODE = 'CLY02';
    END IF;
    UPDATE public.executions SET user_satisfaction = p_stars, user_feedback = p_feedback WHERE id = e.id;
    RETURN true;
  END
  $$;

DO $$
DECLARE
  fn text;
BEGIN
  FOREACH fn IN ARRAY ARRAY[
    'public.clay_reserve_budget(text, numeric, interval)',
    'public.clay_close_reservation(uuid, text, numeric, text)',
    'public.clay_settle_reservation(uuid, numeric)',
    'public.clay_release_reservation(uuid, text)',
    'public.clay_expire_reservations(integer)',
    'public.clay_complete_execution(uuid, text, jsonb, numeric, timestamp with time zone, text)',
    'public.clay_rate_execution(uuid, integer, text)'
  ] LOOP
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO clay_app, clay_maintenance', fn);
  END LOOP;
END
$$;
REVOKE ALL ON FUNCTION public.clay_awaits_approval(text, jsonb) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.clay_awaits_approval(text, jsonb) TO clay_app, clay_maintenance;
REVOKE ALL ON FUNCTION public.clay_usd_quota(jsonb, text) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.clay_usd_quota(jsonb, text) TO clay_app, clay_maintenance;
