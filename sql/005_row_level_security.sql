-- Tenant isolation enforced by the database.
--
-- Every table holding tenant data has row-level security ENABLED and FORCED (so even the owning
-- role is subject to it). Policies compare tenant_id with the transaction-local setting
-- app.tenant_id (set with set_config('app.tenant_id', ..., true)); when it is unset,
-- clay_current_tenant() is NULL, the comparison is never true, and the policy fails closed:
-- zero rows visible, every insert refused.
SET LOCAL ROLE clay_owner;

DO $$
DECLARE
  tenant_table text;
BEGIN
  FOREACH tenant_table IN ARRAY ARRAY[
    'systems', 'executions', 'routing_rules', 'dreams', 'constitutional_amendments',
    'resources', 'payroll_entries', 'mcp_telemetry_log'
  ] LOOP
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON public.%I', tenant_table);
    -- (SELECT ...) makes the planner evaluate the setting once per statement, not once per row.
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON public.%I FOR ALL '
      'USING (tenant_id = (SELECT public.clay_current_tenant())) '
      'WITH CHECK (tenant_id = (SELECT public.clay_current_tenant()))',
      tenant_table);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO clay_app', tenant_table);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO clay_maintenance', tenant_table);
  END LOOP;
END
$$;

-- The platform's skills registry is shared: systems with tenant_id NULL belong to the platform and
-- are readable (never writable) by every tenant-scoped transaction. Still closed with no tenant set.
DROP POLICY IF EXISTS shared_systems_read ON public.systems;
CREATE POLICY shared_systems_read ON public.systems FOR SELECT
  USING (tenant_id IS NULL AND (SELECT public.clay_current_tenant()) IS NOT NULL);

-- A tenant sees and updates its own tenants row only; onboarding is a maintenance job.
ALTER TABLE public.tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.tenants FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_self ON public.tenants;
CREATE POLICY tenant_self ON public.tenants FOR ALL
  USING (id = (SELECT public.clay_current_tenant()))
  WITH CHECK (id = (SELECT public.clay_current_tenant()));
GRANT SELECT, UPDATE ON public.tenants TO clay_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON public.tenants TO clay_maintenance;

REVOKE ALL ON FUNCTION public.clay_current_tenant() FROM PUBLIC;
GRANT EXECUTE ON FUNCTION public.clay_current_tenant() TO clay_app, clay_maintenance;

-- Resolving a tenant's name or domain to its id happens before any tenant is set, so it cannot go
-- through the policies above. One narrow SECURITY DEFINER function does it, owned by the
-- maintenance role in a schema of its own; it returns an id and nothing else.
RESET ROLE;
CREATE SCHEMA IF NOT EXISTS clay_admin AUTHORIZATION clay_maintenance;
SET LOCAL ROLE clay_maintenance;
CREATE OR REPLACE FUNCTION clay_admin.tenant_id_for(p_name_or_domain text) RETURNS uuid
  LANGUAGE sql STABLE SECURITY DEFINER
  SET search_path = pg_catalog, pg_temp
  AS $$
    SELECT t.id FROM public.tenants t
    WHERE t.is_active AND (t.name = p_name_or_domain OR t.domain = p_name_or_domain)
    ORDER BY t.created_at, t.id
    LIMIT 1
  $$;
REVOKE ALL ON FUNCTION clay_admin.tenant_id_for(text) FROM PUBLIC;
GRANT USAGE ON SCHEMA clay_admin TO clay_app;
GRANT EXECUTE ON FUNCTION clay_admin.tenant_id_for(text) TO clay_app;
