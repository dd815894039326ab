-- Constitutions that change only through recorded, reversible amendments.
--
-- A skill's base constitution is systems.constitution. A tenant's changes are amendments of that
-- tenant (constitutional_amendments.tenant_id = the tenant); the tenant's effective constitution is
-- the base with the tenant's amendments applied in order, kept in constitution_state (a row only for
-- tenants that amended the skill). Platform amendments (tenant_id NULL, by the maintenance role)
-- change the base; every tenant reads them. clay_effective_constitution(system) answers for the
-- current transaction's tenant, for any client.
SET LOCAL ROLE clay_owner;

-- Additions to the specification's table: identity of both sides (SHA-256 of RFC 8785 canonical
-- JSON), order, what a rollback undid, who proposed the change when a person approved it.
ALTER TABLE public.constitutional_amendments
  ADD COLUMN IF NOT EXISTS seq bigint GENERATED ALWAYS AS IDENTITY,
  ADD COLUMN IF NOT EXISTS old_hash text,
  ADD COLUMN IF NOT EXISTS new_hash text,
  ADD COLUMN IF NOT EXISTS proposed_by text,
  ADD COLUMN IF NOT EXISTS rollback_of uuid REFERENCES constitutional_amendments(id);
CREATE UNIQUE INDEX IF NOT EXISTS constitutional_amendments_seq_key ON constitutional_amendments (seq);
CREATE UNIQUE INDEX IF NOT EXISTS constitutional_amendments_one_rollback
  ON constitutional_amendments (rollback_of) WHERE rollback_of IS NOT NULL;
CREATE INDEX IF NOT EXISTS constitutional_amendments_system_seq_idx
  ON constitutional_amendments (system_id, tenant_id, seq);

-- Platform amendments are the history of every tenant's base: readable by every tenant.
DROP POLICY IF EXISTS platform_amendments_read ON public.constitutional_amendments;
CREATE POLICY platform_amendments_read ON public.constitutional_amendments FOR SELECT
  USING (tenant_id IS NULL AND (SELECT public.clay_current_tenant()) IS NOT NULL);

-- Append-only: no DELETE, and an UPDATE may only set rolled_back_at, once.
REVOKE DELETE, TRUNCATE ON public.constitutional_amendments FROM clay_app, clay_maintenance;
CREATE OR REPLACE FUNCTION public.clay_amendments_append_only() RETURNS trigger
  LANGUAGE plpgsql
  AS $$
  BEGIN
    IF OLD.rolled_back_at IS NOT NULL THEN
      RAISE EXCEPTION 'amendment % was already rolled back at %', OLD.id, OLD.rolled_back_at
        USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    IF NEW.rolled_back_at IS NULL
       OR (to_jsonb(NEW) - 'rolled_back_at') IS DISTINCT FROM (to_jsonb(OLD) - 'rolled_back_at') THEN
      RAISE EXCEPTION 'amendments are append-only: only rolled_back_at may be set, once (amendment %)', OLD.id
        USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS amendments_append_only ON public.constitutional_amendments;
CREATE TRIGGER amendments_append_only BEFORE UPDATE ON public.constitutional_amendments
  FOR EACH ROW EXECUTE FUNCTION public.clay_amendments_append_only();

-- The tenant's effective constitution of a skill it amended.
CREATE TABLE IF NOT EXISTS public.constitution_state (
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  system_id uuid NOT NULL REFERENCES systems(id),
  constitution jsonb NOT NULL,
  constitution_hash text NOT NULL,
  amendment_id uuid NOT NULL REFERENCES constitutional_amendments(id),
  updated_at timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, system_id)
);
SELECT public.clay_enable_tenant_isolation('public.constitution_state', ARRAY['SELECT', 'INSERT', 'UPDATE']);
SELECT public.clay_require_same_tenant('public.constitution_state', 'system_id', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.constitution_state', 'amendment_id', 'public.constitutional_amendments');
SELECT public.clay_require_same_tenant('public.constitutional_amendments', 'rollback_of', 'public.constitutional_amendments');

-- A constitution changes only together with the amendment that records it, written earlier in the
-- same transaction (its xmin is this transaction's id; amendments are not written in savepoints):
-- systems.constitution (a skill's base) with an amendment of the skill's owner (NULL: the platform),
-- constitution_state with an amendment of its tenant.
CREATE OR REPLACE FUNCTION public.clay_amended_in_this_transaction(
  p_system_id uuid, p_tenant_id uuid, p_constitution jsonb
) RETURNS boolean
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, public
  AS $$
    SELECT EXISTS (
      SELECT 1 FROM public.constitutional_amendments a
      WHERE a.system_id = p_system_id AND a.tenant_id IS NOT DISTINCT FROM p_tenant_id
        AND a.new_constitution = p_constitution AND a.xmin = pg_current_xact_id()::xid)
  $$;

CREATE OR REPLACE FUNCTION public.clay_base_constitution_is_amended() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  BEGIN
    IF NEW.constitution IS DISTINCT FROM OLD.constitution
       AND NOT public.clay_amended_in_this_transaction(NEW.id, NEW.tenant_id, NEW.constitution) THEN
      RAISE EXCEPTION 'the constitution of % changes only through an amendment (clay amend)', NEW.name
        USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS base_constitution_is_amended ON public.systems;
CREATE TRIGGER base_constitution_is_amended BEFORE UPDATE OF constitution ON public.systems
  FOR EACH ROW EXECUTE FUNCTION public.clay_base_constitution_is_amended();

CREATE OR REPLACE FUNCTION public.clay_constitution_state_is_amended() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  BEGIN
    IF (TG_OP = 'INSERT' OR NEW.constitution IS DISTINCT FROM OLD.constitution)
       AND NOT public.clay_amended_in_this_transaction(NEW.system_id, NEW.tenant_id, NEW.constitution)
       -- A platform amendment re-derives every tenant's state from the new base.
       AND NOT EXISTS (
         SELECT 1 FROM public.constitutional_amendments a
         WHERE a.system_id = NEW.system_id AND a.tenant_id IS NULL AND a.xmin = pg_current_xact_id()::xid) THEN
      RAISE EXCEPTION 'a tenant''s constitution changes only through an amendment (clay amend)'
        USING ERRCODE = 'integrity_constraint_violation';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS constitution_state_is_amended ON public.constitution_state;
CREATE TRIGGER constitution_state_is_amended BEFORE INSERT OR UPDATE ON public.constitution_state
  FOR EACH ROW EXECUTE FUNCTION public.clay_constitution_state_is_amended();

-- The effective constitution of a skill for the current transaction's tenant (the base when the
-- tenant never amended it, or when no tenant is set). SECURITY INVOKER: row-level security applies.
CREATE OR REPLACE FUNCTION public.clay_effective_constitution(p_system_id uuid) RETURNS jsonb
  LANGUAGE sql STABLE
  SET search_path = pg_catalog, public
  AS $$
    SELECT coalesce(
      (SELECT c.constitution FROM public.constitution_state c
       WHERE c.system_id = p_system_id AND c.tenant_id = public.clay_current_tenant()),
      (SELECT s.constitution FROM public.systems s WHERE s.id = p_system_id))
  $$;
GRANT EXECUTE ON FUNCTION public.clay_effective_constitution(uuid) TO clay_app, clay_maintenance;

-- Automated changes that wait for a person (ARM mode: the constitution's requires_approval lists
-- amend_constitution), and the per-tenant switch that freezes automated changes.
CREATE TABLE IF NOT EXISTS public.pending_amendments (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  system_id uuid NOT NULL REFERENCES systems(id),
  amendment_type text NOT NULL,
  prepared_against_hash text NOT NULL,
  changes jsonb NOT NULL,           -- {"parameters.key": new value, ...}
  evidence jsonb NOT NULL DEFAULT '{}',
  proposed_by text NOT NULL,
  proposed_at timestamp with time zone NOT NULL DEFAULT now(),
  status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'approved', 'rejected', 'stale')),
  decided_by text,
  decided_at timestamp with time zone,
  decision_reason text,
  amendment_id uuid REFERENCES constitutional_amendments(id)
);
CREATE INDEX IF NOT EXISTS pending_amendments_tenant_status_idx ON pending_amendments (tenant_id, status);
SELECT public.clay_enable_tenant_isolation('public.pending_amendments', ARRAY['SELECT', 'INSERT', 'UPDATE']);
SELECT public.clay_require_same_tenant('public.pending_amendments', 'system_id', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.pending_amendments', 'amendment_id', 'public.constitutional_amendments');

CREATE TABLE IF NOT EXISTS public.constitution_controls (
  tenant_id uuid PRIMARY KEY REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  automated_changes_frozen boolean NOT NULL DEFAULT false,
  changed_by text NOT NULL,
  changed_at timestamp with time zone NOT NULL DEFAULT now(),
  reason text
);
SELECT public.clay_enable_tenant_isolation('public.constitution_controls', ARRAY['SELECT', 'INSERT', 'UPDATE']);
