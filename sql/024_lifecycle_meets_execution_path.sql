-- Where the lifecycle (018) and the execution path (019, 021, 023) meet.
--
-- 1. A completed execution's output and a given rating's feedback are final (019), but COLD moves them
--    out of the row and an access (or a restore from the archive) brings them back: content may
--    return in the very UPDATE that takes the row out of COLD or ARCHIVED. The receipt's fields stay
--    append-only whatever the state.
-- 2. A client logging an execution through the Supabase API: the same-tenant trigger on archive_id
--    reads lifecycle_archives as the writing role, so `authenticated` may read its own archives' ids
--    (row-level security keeps them its own), and nothing else of them.
SET LOCAL ROLE clay_owner;

CREATE OR REPLACE FUNCTION public.clay_execution_guard() RETURNS trigger
  LANGUAGE plpgsql
  SET search_path = pg_catalog, public
  AS $$
  DECLARE
    content_returns boolean := OLD.lifecycle_state IN ('COLD', 'ARCHIVED')
                               AND NEW.lifecycle_state IS DISTINCT FROM OLD.lifecycle_state;
  BEGIN
    IF OLD.completed_at IS NOT NULL THEN
      IF NEW.completed_at IS DISTINCT FROM OLD.completed_at
         OR NEW.cost_usd IS DISTINCT FROM OLD.cost_usd
         OR NEW.error_message IS DISTINCT FROM OLD.error_message
         OR (NEW.output_data IS DISTINCT FROM OLD.output_data AND NEW.output_data IS NOT NULL AND NOT content_returns)
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
         OR (NEW.user_feedback IS DISTINCT FROM OLD.user_feedback AND NEW.user_feedback IS NOT NULL
             AND NOT content_returns)) THEN
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

GRANT SELECT (id, tenant_id) ON public.lifecycle_archives TO authenticated;
