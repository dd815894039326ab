-- Hardening the second line of defence: a tenant's identity is not the tenant's to change, a
-- reference between tenant rows stays inside the tenant, and application sessions cannot create
-- temporary tables (a TEMP table named like a real one would capture the next user's writes on a
-- pooled connection).
--
-- The application role is a trusted service's credential (this project's pipelines and CLI), not a
-- tenant's: anything running arbitrary SQL as clay_app can set app.tenant_id. These rules close the
-- holes that a bug in such a service would open, and they hold for every client of the database.
SET LOCAL ROLE clay_owner;

-- 1. Identity and plan (name, domain, tier, budgets, max_users) change only by onboarding, which is
--    the maintenance role's job. The application role reads its own tenants row and nothing more.
REVOKE INSERT, UPDATE, DELETE, TRUNCATE ON public.tenants FROM clay_app;

-- 2. A tenant reference (a name or a domain, from an inbox folder, --tenant or BAMBOOHR_TENANT)
--    names exactly one tenant: no tenant may take a name or domain that another tenant already uses
--    as its name or domain, compared case-insensitively. Serialised by a transaction-level advisory
--    lock so two concurrent onboardings cannot both pass.
CREATE OR REPLACE FUNCTION public.clay_tenant_identity_is_unique() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    clash record;
  BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('clay.tenants.identity'));
    SELECT t.id, t.name, t.domain INTO clash FROM public.tenants t
    WHERE t.id <> NEW.id
      AND (lower(t.name) IN (lower(NEW.name), lower(NEW.domain))
           OR lower(t.domain) IN (lower(NEW.name), lower(NEW.domain)))
    LIMIT 1;
    IF FOUND THEN
      RAISE EXCEPTION 'tenant name % / domain % is already used by another tenant', NEW.name, NEW.domain
        USING ERRCODE = 'unique_violation';
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS tenant_identity_is_unique ON public.tenants;
CREATE TRIGGER tenant_identity_is_unique BEFORE INSERT OR UPDATE OF name, domain ON public.tenants
  FOR EACH ROW EXECUTE FUNCTION public.clay_tenant_identity_is_unique();

-- Lookup: case-insensitive, active tenants only, and an error rather than a guess when a reference
-- matches more than one tenant (rows written before this migration may still clash).
RESET ROLE;
SET LOCAL ROLE clay_maintenance;
CREATE OR REPLACE FUNCTION clay_admin.tenant_id_for(p_name_or_domain text) RETURNS uuid
  LANGUAGE plpgsql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
  DECLARE
    matches uuid[];
  BEGIN
    SELECT array_agg(t.id ORDER BY t.id) INTO matches FROM public.tenants t
    WHERE t.is_active AND (lower(t.name) = lower(p_name_or_domain) OR lower(t.domain) = lower(p_name_or_domain));
    IF cardinality(matches) > 1 THEN
      RAISE EXCEPTION 'tenant reference % is ambiguous: % tenants have that name or domain',
        p_name_or_domain, cardinality(matches) USING ERRCODE = 'cardinality_violation';
    END IF;
    RETURN matches[1];
  END
  $$;
RESET ROLE;
SET LOCAL ROLE clay_owner;

-- 3. References between tenant rows stay inside the tenant. A foreign key alone lets tenant B point
--    a row at tenant A's row (the key's check ignores row-level security), and its error tells B
--    whether that id exists. clay_require_same_tenant(table, column, parent, shared) adds a BEFORE
--    trigger that looks the referenced ids up as the writing role: under row-level security another
--    tenant's rows are invisible, so they fail exactly like ids that do not exist, before the
--    foreign key is consulted; roles that bypass row-level security compare tenant_id explicitly.
--    shared: the parent's platform-wide rows (tenant_id NULL) may be referenced by every tenant.
--    Scalar uuid and uuid[] columns are both handled. New migrations call it for every reference.
CREATE OR REPLACE FUNCTION public.clay_require_same_tenant(
  p_table regclass, p_column name, p_parent regclass, p_shared boolean DEFAULT false
) RETURNS void
  LANGUAGE plpgsql
  AS $fn$
  DECLARE
    table_name name;
    is_array boolean;
    trigger_function text;
    ids text;
  BEGIN
    SELECT c.relname, t.typcategory = 'A' INTO table_name, is_array
    FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid JOIN pg_type t ON t.oid = a.atttypid
    WHERE a.attrelid = p_table AND a.attname = p_column AND NOT a.attisdropped;
    IF NOT FOUND THEN
      RAISE EXCEPTION 'clay_require_same_tenant: % has no column %', p_table, p_column;
    END IF;
    trigger_function := left(format('clay_same_tenant_%s_%s', table_name, p_column), 63);
    ids := CASE WHEN is_array THEN format('NEW.%I', p_column) ELSE format('ARRAY[NEW.%I]', p_column) END;
    EXECUTE format(
      $body$
      CREATE OR REPLACE FUNCTION public.%1$I() RETURNS trigger
        LANGUAGE plpgsql
        SET search_path = pg_catalog, public
        AS $trigger$
        DECLARE
          missing uuid;
        BEGIN
          SELECT x INTO missing FROM unnest(%2$s) AS x
          WHERE x IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM %3$s p
            WHERE p.id = x AND (p.tenant_id IS NOT DISTINCT FROM NEW.tenant_id %4$s))
          LIMIT 1;
          IF FOUND THEN
            RAISE EXCEPTION '%5$s.%6$s: %% is not a %3$s row of this tenant', missing
              USING ERRCODE = 'foreign_key_violation';
          END IF;
          RETURN NEW;
        END
        $trigger$
      $body$,
      trigger_function, ids, p_parent, CASE WHEN p_shared THEN 'OR p.tenant_id IS NULL' ELSE '' END,
      table_name, p_column);
    EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trigger_function, p_table);
    EXECUTE format(
      'CREATE TRIGGER %I BEFORE INSERT OR UPDATE OF %I, tenant_id ON %s FOR EACH ROW EXECUTE FUNCTION public.%I()',
      trigger_function, p_column, p_table, trigger_function);
  END
  $fn$;
REVOKE ALL ON FUNCTION public.clay_require_same_tenant(regclass, name, regclass, boolean) FROM PUBLIC;

SELECT public.clay_require_same_tenant('public.executions', 'system_id', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.executions', 'routing_path', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.routing_rules', 'recommended_system_id', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.routing_rules', 'alternative_systems', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.dreams', 'system_id', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.constitutional_amendments', 'system_id', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.payroll_entries', 'document_id', 'public.payroll_documents');
SELECT public.clay_require_same_tenant('public.payroll_documents', 'execution_id', 'public.executions');
SELECT public.clay_require_same_tenant('public.payroll_entry_history', 'document_id', 'public.payroll_documents');
SELECT public.clay_require_same_tenant('public.payroll_entry_history', 'replaced_by_document_id', 'public.payroll_documents');
SELECT public.clay_require_same_tenant('public.payroll_review_queue', 'entry_id', 'public.payroll_entries');
SELECT public.clay_require_same_tenant('public.bamboohr_outbox', 'entry_id', 'public.payroll_entries');
SELECT public.clay_require_same_tenant('public.bamboohr_outbox', 'document_id', 'public.payroll_documents');
SELECT public.clay_require_same_tenant('public.routing_rule_prototypes', 'rule_id', 'public.routing_rules');
SELECT public.clay_require_same_tenant('public.routing_memberships', 'execution_id', 'public.executions');
SELECT public.clay_require_same_tenant('public.routing_memberships', 'rule_id', 'public.routing_rules');

-- 4. No temporary tables for the application role. TEMP is granted to PUBLIC on every database, so
--    it is revoked from PUBLIC and given back to every other role that exists (the owner and
--    maintenance roles, and other programs sharing the database keep what they had).
--    Where the migrating user may not change the database's privileges (a managed service), the
--    revoke is skipped with a notice; the application still resets every pooled connection and puts
--    pg_temp last on its search_path, so a temporary table can never stand in for a real one.
--    A function, because database privileges belong to the database, not to its contents: a copy
--    made with CREATE DATABASE ... TEMPLATE starts with the defaults and calls it again.
RESET ROLE;
CREATE OR REPLACE FUNCTION public.clay_revoke_temporary_from_app() RETURNS void
  LANGUAGE plpgsql
  SET search_path = pg_catalog
  AS $$
  DECLARE
    other_role name;
  BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    FOR other_role IN SELECT rolname FROM pg_roles WHERE rolname !~ '^pg_' AND rolname <> 'clay_app' LOOP
      EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), other_role);
    END LOOP;
  EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'TEMP could not be revoked from PUBLIC on %: %', current_database(), SQLERRM;
  END
  $$;
REVOKE ALL ON FUNCTION public.clay_revoke_temporary_from_app() FROM PUBLIC;
SELECT public.clay_revoke_temporary_from_app();
