-- The execution path for the platform's other programs: a client with a Supabase JWT reserves budget,
-- completes its executions and rates them through the same functions this project uses (RPC).
--
-- Such a client holds no UPDATE on executions, resources or reservations (021: budgets, completion
-- and receipts change only through functions and triggers; a direct UPDATE could reset a budget or
-- complete an execution without settling its reservation). So these functions run with their
-- owner's privileges (SECURITY DEFINER, owner clay_owner, a fixed search_path) for every caller.
-- Row-level security still applies inside them: every table they touch forces it on its owner too,
-- and clay_current_tenant() is the caller's tenant (its claims, or app.tenant_id for this project's
-- roles), so a tenant reaches only its own rows, exactly as with the invoker's rights.
SET LOCAL ROLE clay_owner;

DO $$
DECLARE
  fn text;
BEGIN
  FOREACH fn IN ARRAY ARRAY[
    'public.clay_reserve_budget(text, numeric, interval)',
    'public.clay_settle_reservation(uuid, numeric)',
    'public.clay_release_reservation(uuid, text)',
    'public.clay_complete_execution(uuid, text, jsonb, numeric, timestamp with time zone, text)',
    'public.clay_rate_execution(uuid, integer, text)'
  ] LOOP
    EXECUTE format('ALTER FUNCTION %s SECURITY DEFINER', fn);
    EXECUTE format('ALTER FUNCTION %s SET search_path = pg_catalog, public', fn);
    PERFORM public.clay_grant_function_to_clients(fn::regprocedure);
  END LOOP;
END
$$;

-- A client logs the execution it reserved for (budget_reservation_id, so that completing it settles
-- the reservation) and the rule it routed by; the same-tenant triggers on those references read the
-- referenced rows as the writing role, so a client may read its tenant's reservations (row-level
-- security keeps them its own). Each call replaces the previous grants of the table.
SELECT public.clay_grant_to_clients('public.executions', ARRAY['SELECT', 'INSERT'], ARRAY[
  'id', 'tenant_id', 'system_id', 'system_name', 'user_request', 'routing_path', 'routing_confidence',
  'routing_propensity', 'input_data', 'governance_check', 'status', 'started_at', 'routing_rule_id',
  'budget_reservation_id']);
SELECT public.clay_grant_to_clients('public.budget_reservations', ARRAY['SELECT']);
