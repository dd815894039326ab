-- One call that puts a new table holding tenant data under the standard isolation, so new
-- migrations stop copying the block of 005, 007 and 010:
--   SELECT public.clay_enable_tenant_isolation('public.my_table');
--   SELECT public.clay_enable_tenant_isolation('public.my_log', ARRAY['SELECT', 'INSERT']);  -- append-only
-- Row-level security enabled and forced (the owner too), the tenant_isolation policy (tenant_id equal
-- to the transaction's tenant; nothing visible and nothing writable when none is set), and the
-- application and maintenance roles' privileges on it (the maintenance role bypasses the policy).
SET LOCAL ROLE clay_owner;

CREATE OR REPLACE FUNCTION public.clay_enable_tenant_isolation(
  p_table regclass, p_privileges text[] DEFAULT ARRAY['SELECT', 'INSERT', 'UPDATE', 'DELETE']
) RETURNS void
  LANGUAGE plpgsql
  AS $$
  DECLARE
    privilege text;
  BEGIN
    FOREACH privilege IN ARRAY p_privileges LOOP
      IF privilege NOT IN ('SELECT', 'INSERT', 'UPDATE', 'DELETE') THEN
        RAISE EXCEPTION 'clay_enable_tenant_isolation(%): % is not SELECT, INSERT, UPDATE or DELETE', p_table, privilege;
      END IF;
    END LOOP;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = p_table AND attname = 'tenant_id' AND NOT attisdropped) THEN
      RAISE EXCEPTION 'clay_enable_tenant_isolation(%): the table has no tenant_id column', p_table;
    END IF;
    EXECUTE format('ALTER TABLE %s ENABLE ROW LEVEL SECURITY', p_table);
    EXECUTE format('ALTER TABLE %s FORCE ROW LEVEL SECURITY', p_table);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON %s', p_table);
    -- (SELECT ...) makes the planner evaluate the setting once per statement, not once per row.
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON %s FOR ALL '
      'USING (tenant_id = (SELECT public.clay_current_tenant())) '
      'WITH CHECK (tenant_id = (SELECT public.clay_current_tenant()))',
      p_table);
    EXECUTE format('REVOKE ALL ON %s FROM clay_app', p_table);
    EXECUTE format('GRANT %s ON %s TO clay_app', array_to_string(p_privileges, ', '), p_table);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON %s TO clay_maintenance', p_table);
  END
  $$;
REVOKE ALL ON FUNCTION public.clay_enable_tenant_isolation(regclass, text[]) FROM PUBLIC;
