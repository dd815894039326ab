-- The platform's other programs (the router, the payroll MCP server, dashboards) reach these tables
-- through the Supabase API (PostgREST) with a user's JWT, as the roles `authenticated` (a verified
-- JWT) and `anon` (none). PostgREST runs each request as one transaction:
--   SET LOCAL ROLE authenticated; set_config('request.jwt.claims', '<the JWT payload>', true); <statement>
-- so the tenant of such a request is the claim app_metadata.tenant_id (app_metadata is writable only
-- with the service key, never by the user, which is why Supabase recommends it for authorization).
--
-- 1. clay_current_tenant(), which every policy and every tenant_id default already calls, now reads:
--      a PostgREST request (request.jwt.claims set)     -> the claim app_metadata.tenant_id, only;
--      this project's roles (clay_app, clay_maintenance, clay_owner) with no claims -> app.tenant_id;
--      any other role, or a claim without a tenant      -> NULL: nothing visible, nothing writable.
--    "The role" is the one the session logged in as or switched to (SET ROLE, as PostgREST and this
--    project's transactions do), not current_user: inside a SECURITY DEFINER function current_user is
--    the function's owner, and a function owned by clay_owner must not turn an API request into one
--    of this project's sessions.
--    The claim wins over app.tenant_id: app.tenant_id is a custom setting anyone running SQL can set
--    (a function reachable over RPC, a session-level leftover), while request.jwt.claims is what
--    PostgREST wrote from the verified token at the start of the request. A JWT holder can never
--    reach a tenant other than its token's.
-- 2. Stand-in roles anon and authenticated (NOLOGIN) are created where they do not exist (the embedded
--    server, a plain PostgreSQL), so the same policies and grants are exercised everywhere.
-- 3. Narrow grants per integration point (clay_grant_to_clients): authenticated reads its tenant's
--    rows and inserts executions, telemetry, routing rules and payroll entries (only the columns a
--    client may state), never DELETE, never UPDATE of guarded state; anon gets nothing.
-- 4. What a client writes cannot skip a guard: routing rules written from outside are people's rules
--    (auto_generated false, created_by from the JWT), which the learner never touches; payroll entries
--    written directly are held in a file version awaiting approval, each queued in the BambooHR
--    outbox (awaiting approval, or review when the employee id is not in the tenant's directory);
--    executions logged by a client start open (partial) or governance_blocked.
--
-- service_role (BYPASSRLS on Supabase) gets no privilege here: the tables are owned by clay_owner, so
-- Supabase's default grants (made for objects postgres creates) do not reach them. A privilege granted
-- to service_role is cross-tenant by nature; give one only to a server-side program, as you would
-- clay_maintenance, and never ship the service key to a browser or an agent.
SET LOCAL ROLE clay_owner;

-- 1. The tenant of the current transaction ------------------------------------------------------
CREATE OR REPLACE FUNCTION public.clay_current_tenant() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$
    SELECT CASE
      WHEN coalesce(current_setting('request.jwt.claims', true), '') <> '' THEN
        nullif(current_setting('request.jwt.claims', true)::jsonb -> 'app_metadata' ->> 'tenant_id', '')::uuid
      WHEN (CASE current_setting('role') WHEN 'none' THEN session_user::text ELSE current_setting('role') END)
           IN ('clay_app', 'clay_maintenance', 'clay_owner') THEN
        nullif(current_setting('app.tenant_id', true), '')::uuid
    END
  $$;

-- 2. Stand-in roles --------------------------------------------------------------------------------
RESET ROLE;
DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'anon') THEN
    CREATE ROLE anon NOLOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'authenticated') THEN
    CREATE ROLE authenticated NOLOGIN NOINHERIT NOSUPERUSER NOBYPASSRLS;
  END IF;
END
$$;

-- No temporary tables for the API's roles either (014's function, now leaving them out too).
CREATE OR REPLACE FUNCTION public.clay_revoke_temporary_from_app() RETURNS void
  LANGUAGE plpgsql
  SET search_path = pg_catalog
  AS $$
  DECLARE
    other_role name;
  BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM PUBLIC', current_database());
    FOR other_role IN SELECT rolname FROM pg_roles
                      WHERE rolname !~ '^pg_' AND rolname NOT IN ('clay_app', 'anon', 'authenticated') LOOP
      EXECUTE format('GRANT TEMPORARY ON DATABASE %I TO %I', current_database(), other_role);
    END LOOP;
  EXCEPTION WHEN insufficient_privilege THEN
    RAISE NOTICE 'TEMP could not be revoked from PUBLIC on %: %', current_database(), SQLERRM;
  END
  $$;
REVOKE ALL ON FUNCTION public.clay_revoke_temporary_from_app() FROM PUBLIC;
SELECT public.clay_revoke_temporary_from_app();

-- The API reaches tables in public only with USAGE on it (Supabase grants it; a fresh server gives it to PUBLIC).
GRANT USAGE ON SCHEMA public TO authenticated;
-- The migration ledger belongs to the migrating user: on Supabase, objects that user (postgres)
-- creates in public are granted to anon, authenticated and service_role by default, which would put
-- the ledger on the API. It is nobody's but the migrating user's.
DO $$
BEGIN
  IF to_regclass('public.schema_migrations') IS NOT NULL THEN
    REVOKE ALL ON public.schema_migrations FROM anon, authenticated;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'service_role') THEN
      REVOKE ALL ON public.schema_migrations FROM service_role;
    END IF;
  END IF;
END
$$;

SET LOCAL ROLE clay_owner;

-- 3. Grants ---------------------------------------------------------------------------------------
-- clay_grant_to_clients(table, privileges, insert_columns, update_columns): what authenticated may do
-- with a table, replacing what it had; anon loses everything. SELECT is table-wide; INSERT is limited
-- to insert_columns when given; UPDATE only ever to named columns (guarded state changes through
-- functions and triggers); DELETE and TRUNCATE never. Row-level security still decides which rows.
CREATE OR REPLACE FUNCTION public.clay_grant_to_clients(
  p_table regclass, p_privileges text[], p_insert_columns text[] DEFAULT NULL, p_update_columns text[] DEFAULT NULL
) RETURNS void
  LANGUAGE plpgsql
  AS $$
  DECLARE
    privilege text;
  BEGIN
    FOREACH privilege IN ARRAY p_privileges LOOP
      IF privilege NOT IN ('SELECT', 'INSERT', 'UPDATE') THEN
        RAISE EXCEPTION 'clay_grant_to_clients(%): % is not for API clients (SELECT, INSERT or UPDATE of named columns)',
          p_table, privilege;
      END IF;
    END LOOP;
    IF 'UPDATE' = ANY (p_privileges) AND coalesce(cardinality(p_update_columns), 0) = 0 THEN
      RAISE EXCEPTION 'clay_grant_to_clients(%): UPDATE needs the columns clients may change', p_table;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_class WHERE oid = p_table AND relrowsecurity AND relforcerowsecurity) THEN
      RAISE EXCEPTION 'clay_grant_to_clients(%): the table has no forced row-level security', p_table;
    END IF;
    EXECUTE format('REVOKE ALL ON %s FROM anon, authenticated', p_table);
    IF 'SELECT' = ANY (p_privileges) THEN
      EXECUTE format('GRANT SELECT ON %s TO authenticated', p_table);
    END IF;
    IF 'INSERT' = ANY (p_privileges) THEN
      IF p_insert_columns IS NULL THEN
        EXECUTE format('GRANT INSERT ON %s TO authenticated', p_table);
      ELSE
        EXECUTE format('GRANT INSERT (%s) ON %s TO authenticated',
          (SELECT string_agg(quote_ident(c), ', ') FROM unnest(p_insert_columns) c), p_table);
      END IF;
    END IF;
    IF 'UPDATE' = ANY (p_privileges) THEN
      EXECUTE format('GRANT UPDATE (%s) ON %s TO authenticated',
        (SELECT string_agg(quote_ident(c), ', ') FROM unnest(p_update_columns) c), p_table);
    END IF;
  END
  $$;
REVOKE ALL ON FUNCTION public.clay_grant_to_clients(regclass, text[], text[], text[]) FROM PUBLIC;

-- clay_grant_function_to_clients(function): callable by authenticated (and still by this project's
-- roles), by nobody else.
CREATE OR REPLACE FUNCTION public.clay_grant_function_to_clients(p_function regprocedure) RETURNS void
  LANGUAGE plpgsql
  AS $$
  BEGIN
    EXECUTE format('REVOKE ALL ON FUNCTION %s FROM PUBLIC, anon', p_function);
    EXECUTE format('GRANT EXECUTE ON FUNCTION %s TO authenticated, clay_app, clay_maintenance', p_function);
  END
  $$;
REVOKE ALL ON FUNCTION public.clay_grant_function_to_clients(regprocedure) FROM PUBLIC;

-- Every table of the project starts with nothing for the API's roles; the integration points below add
-- what they need. A table a later migration adds has nothing until it calls clay_grant_to_clients.
DO $$
DECLARE
  t regclass;
BEGIN
  FOR t IN SELECT c.oid::regclass FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'v', 'm', 'p', 'S')
             AND c.relowner = 'clay_owner'::regrole LOOP
    EXECUTE format('REVOKE ALL ON %s FROM anon, authenticated', t);
  END LOOP;
END
$$;

-- Policies and column defaults call clay_current_tenant() as the querying role.
GRANT EXECUTE ON FUNCTION public.clay_current_tenant() TO authenticated;
REVOKE ALL ON FUNCTION public.clay_current_tenant() FROM anon;
-- The router reads a skill's effective constitution (its thresholds) for its tenant.
SELECT public.clay_grant_function_to_clients('public.clay_effective_constitution(uuid)');

-- Reading: the tenant's own row, the skills registry with its rollups (the tenant's and the platform's
-- skills), the tenant's rules, executions, telemetry, budgets, payroll entries and file versions.
SELECT public.clay_grant_to_clients('public.tenants', ARRAY['SELECT']);
SELECT public.clay_grant_to_clients('public.systems', ARRAY['SELECT']);
SELECT public.clay_grant_to_clients('public.resources', ARRAY['SELECT']);
SELECT public.clay_grant_to_clients('public.payroll_documents', ARRAY['SELECT']);
-- The router logs its decision; completion (status, cost, receipt) goes through the completion function.
SELECT public.clay_grant_to_clients('public.executions', ARRAY['SELECT', 'INSERT'], ARRAY[
  'id', 'tenant_id', 'system_id', 'system_name', 'user_request', 'routing_path', 'routing_confidence',
  'routing_propensity', 'input_data', 'governance_check', 'status', 'started_at']);
-- The router writes rules of its own (people's rules to this project: see the trigger below).
SELECT public.clay_grant_to_clients('public.routing_rules', ARRAY['SELECT', 'INSERT'], ARRAY[
  'id', 'tenant_id', 'request_pattern', 'request_embedding', 'request_embedding_model', 'recommended_system_id',
  'alternative_systems', 'based_on_executions', 'success_rate', 'avg_cost_usd', 'avg_duration_ms',
  'confidence_score', 'auto_generated', 'created_by', 'is_active']);
-- MCP servers log their tool calls.
SELECT public.clay_grant_to_clients('public.mcp_telemetry_log', ARRAY['SELECT', 'INSERT'], ARRAY[
  'id', 'tenant_id', 'server_name', 'tool_name', 'input_data', 'execution_time_ms', 'success', 'error_message',
  'timestamp']);
-- The payroll MCP server's insert (the specification's columns and the currency); the version, line,
-- resolution and delivery are the database's to decide (see the triggers below).
SELECT public.clay_grant_to_clients('public.payroll_entries', ARRAY['SELECT', 'INSERT'], ARRAY[
  'tenant_id', 'employee_id', 'employee_name', 'date', 'amount', 'reference', 'source_file', 'currency']);

-- 4a. Executions a client logs start open: completed, failed or timed-out states are reached through
--     the completion function (receipt, budget settlement), not written directly.
DROP POLICY IF EXISTS client_executions_start_open ON public.executions;
CREATE POLICY client_executions_start_open ON public.executions AS RESTRICTIVE FOR INSERT TO authenticated
  WITH CHECK (status IN ('partial', 'governance_blocked'));

-- 4b. Rules written from outside this project's roles are people's rules: the learner never touches a
--     rule with auto_generated false (and it would retire or rewrite one marked true). created_by is
--     who the JWT says wrote it, so the router cannot pose as the learner ('routing-learner'). On
--     INSERT only: clients may not UPDATE rules, and an owner's manual fix keeps a rule what it was.
CREATE OR REPLACE FUNCTION public.clay_outside_rules_are_peoples() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    claims jsonb := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
  BEGIN
    IF claims IS NOT NULL OR (CASE current_setting('role') WHEN 'none' THEN session_user::text
                              ELSE current_setting('role') END) NOT IN ('clay_app', 'clay_maintenance', 'clay_owner') THEN
      NEW.auto_generated := false;
      NEW.created_by := coalesce(claims ->> 'email', claims ->> 'sub', current_user::text);
    END IF;
    RETURN NEW;
  END
  $$;
DROP TRIGGER IF EXISTS clay_outside_rules_are_peoples ON public.routing_rules;
CREATE TRIGGER clay_outside_rules_are_peoples BEFORE INSERT ON public.routing_rules
  FOR EACH ROW EXECUTE FUNCTION public.clay_outside_rules_are_peoples();

-- 4c. Payroll entries written without a file version (the payroll MCP server's insert; this project's
--     pipeline always names one) are held like an extracted PDF: they join the live version of their
--     source_file when that version is an API submission still awaiting approval, or start one
--     (template 'api', approval 'awaiting'); each is queued in the BambooHR outbox awaiting approval, or
--     in the review queue and awaiting review when the employee id is not in the tenant's directory.
--     `clay approve payroll TENANT/FILE` releases them as it does a PDF's. A file whose live version is
--     approved, rejected or came from the inbox takes no more entries: the error says so.
--     SECURITY DEFINER as clay_owner, which row-level security binds (forced): it writes the version,
--     outbox and review rows the client has no privilege on, in the request's own tenant only.
CREATE OR REPLACE FUNCTION public.clay_hold_direct_payroll_entry() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    tenant uuid := public.clay_current_tenant();
    claims jsonb := nullif(current_setting('request.jwt.claims', true), '')::jsonb;
    live record;
    line integer;
  BEGIN
    -- No tenant, or another tenant's (a role that bypasses row-level security naming one): refused
    -- before anything is looked up, so the error says nothing about any tenant's files.
    IF tenant IS NULL OR NEW.tenant_id IS DISTINCT FROM tenant THEN
      RAISE EXCEPTION 'payroll entries written directly are held for approval in the tenant of the request (the JWT''s app_metadata.tenant_id); this one names no tenant or another'
        USING ERRCODE = 'insufficient_privilege';
    END IF;
    PERFORM pg_advisory_xact_lock(hashtext(tenant::text || '/' || NEW.source_file));
    SELECT d.id, d.version, d.status, d.template, d.approval_status INTO live
    FROM public.payroll_documents d
    WHERE d.tenant_id = tenant AND d.source_file = NEW.source_file AND d.status IN ('extracted', 'duplicate')
    FOR UPDATE;
    IF NOT FOUND THEN
      INSERT INTO public.payroll_documents (tenant_id, source_file, content_hash, version, status, template)
      VALUES (tenant, NEW.source_file, 'api', coalesce((
        SELECT max(d.version) FROM public.payroll_documents d
        WHERE d.tenant_id = tenant AND d.source_file = NEW.source_file), 0) + 1, 'extracted', 'api')
      RETURNING id, version, status, template, approval_status INTO live;
    ELSIF live.template IS DISTINCT FROM 'api' OR live.status <> 'extracted' OR live.approval_status <> 'awaiting' THEN
      RAISE EXCEPTION 'payroll file % already has version % (%, approval %); entries written directly go to a file of their own',
        NEW.source_file, live.version, CASE WHEN live.template = 'api' THEN 'written through the API' ELSE 'from the inbox' END,
        live.approval_status
        USING ERRCODE = 'unique_violation';
    END IF;
    SELECT coalesce(max(e.line_no), 0) + 1 INTO line FROM public.payroll_entries e WHERE e.document_id = live.id;
    UPDATE public.payroll_documents
    SET entry_count = entry_count + 1, total_amount = coalesce(total_amount, 0) + NEW.amount
    WHERE id = live.id;
    NEW.document_id := live.id;
    NEW.line_no := line;
    NEW.printed_name := NEW.employee_name;
    NEW.printed_employee_id := NEW.employee_id;
    NEW.resolution := jsonb_build_object(
      'method', 'api',
      'by', coalesce(claims ->> 'email', claims ->> 'sub',
                    CASE current_setting('role') WHEN 'none' THEN session_user::text ELSE current_setting('role') END),
      'resolved', EXISTS (SELECT 1 FROM public.employee_directory p
                          WHERE p.tenant_id = tenant AND p.employee_id = NEW.employee_id));
    RETURN NEW;
  END
  $$;
REVOKE ALL ON FUNCTION public.clay_hold_direct_payroll_entry() FROM PUBLIC;
-- Named to fire before the same-tenant check of document_id (012), which then checks the version too.
DROP TRIGGER IF EXISTS clay_hold_direct_payroll_entry ON public.payroll_entries;
CREATE TRIGGER clay_hold_direct_payroll_entry BEFORE INSERT ON public.payroll_entries
  FOR EACH ROW WHEN (NEW.document_id IS NULL) EXECUTE FUNCTION public.clay_hold_direct_payroll_entry();

CREATE OR REPLACE FUNCTION public.clay_queue_direct_payroll_entry() RETURNS trigger
  LANGUAGE plpgsql SECURITY DEFINER
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    resolved boolean := coalesce((NEW.resolution ->> 'resolved')::boolean, false);
  BEGIN
    IF NOT resolved THEN
      INSERT INTO public.payroll_review_queue (tenant_id, entry_id, printed_name, reason)
      VALUES (NEW.tenant_id, NEW.id, coalesce(NEW.employee_name, NEW.employee_id),
              format('employee id %s is not in the tenant''s directory', NEW.employee_id));
    END IF;
    INSERT INTO public.bamboohr_outbox (tenant_id, entry_id, document_id, payload, status)
    VALUES (NEW.tenant_id, NEW.id, NEW.document_id,
            jsonb_build_object('employee_id', NEW.employee_id, 'date', NEW.date::text, 'amount', NEW.amount::text,
                               'currency', NEW.currency, 'reference', NEW.reference),
            CASE WHEN resolved THEN 'awaiting_approval' ELSE 'awaiting_review' END);
    RETURN NULL;
  END
  $$;
REVOKE ALL ON FUNCTION public.clay_queue_direct_payroll_entry() FROM PUBLIC;
DROP TRIGGER IF EXISTS clay_queue_direct_payroll_entry ON public.payroll_entries;
CREATE TRIGGER clay_queue_direct_payroll_entry AFTER INSERT ON public.payroll_entries
  FOR EACH ROW WHEN (NEW.resolution ->> 'method' = 'api') EXECUTE FUNCTION public.clay_queue_direct_payroll_entry();
