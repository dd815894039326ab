-- Dream cycles: one dreams row per tested (or skipped) mutation, its decision, its promotion, and
-- the watch that follows a promotion. Also what the router logs so that later dreams can be
-- estimated honestly: the probability of the choice it made.
SET LOCAL ROLE clay_owner;

-- Additions to the specification's dreams table.
ALTER TABLE public.dreams
  ADD COLUMN IF NOT EXISTS mutation_hash text,
  ADD COLUMN IF NOT EXISTS status text,
  ADD COLUMN IF NOT EXISTS approved_by text,
  ADD COLUMN IF NOT EXISTS approved_at timestamp with time zone,
  ADD COLUMN IF NOT EXISTS amendment_id uuid REFERENCES constitutional_amendments(id),
  ADD COLUMN IF NOT EXISTS pending_amendment_id uuid REFERENCES pending_amendments(id),
  ADD COLUMN IF NOT EXISTS night date,              -- the night dreamed (UTC), from cycle_id
  ADD COLUMN IF NOT EXISTS evaluation_only boolean NOT NULL DEFAULT false;  -- a backfilled night: never promotes
ALTER TABLE public.dreams DROP CONSTRAINT IF EXISTS dreams_status_check;
ALTER TABLE public.dreams ADD CONSTRAINT dreams_status_check CHECK (status IN (
  'skipped',           -- not dreamed (its effect cannot be shown offline, a frozen tenant, a key under watch)
  'rejected',          -- the decision rule rejected it
  'inconclusive',      -- neither promoted nor rejected: for a person to look at
  'not_selected',      -- evaluated on half A, not among the top k confirmed on half B
  'promotable',        -- the rule promotes it, but nothing applies: a backfilled night, or a frozen tenant
  'promoted',          -- applied through a dream_promotion amendment
  'pending_approval',  -- promoted by the rule, waiting for a person (ARM mode)
  'declined',          -- a person rejected the promotion
  'stale'              -- the constitution changed before the promotion could apply
));
CREATE UNIQUE INDEX IF NOT EXISTS dreams_natural_key ON dreams (tenant_id, system_id, cycle_id, mutation_hash);
CREATE INDEX IF NOT EXISTS dreams_tenant_status_idx ON dreams (tenant_id, status);
SELECT public.clay_require_same_tenant('public.dreams', 'amendment_id', 'public.constitutional_amendments');
SELECT public.clay_require_same_tenant('public.dreams', 'pending_amendment_id', 'public.pending_amendments');

-- The probability that the router's policy chose what it chose (1 without exploration), so that
-- dreams can weigh logged outcomes by it.
ALTER TABLE public.executions ADD COLUMN IF NOT EXISTS routing_propensity numeric
  CHECK (routing_propensity IS NULL OR (routing_propensity > 0 AND routing_propensity <= 1));

-- After a promotion: its keys are watched; live executions after it are compared with the period
-- before, and a breach beyond the rule's tolerance rolls the amendment back once.
CREATE TABLE IF NOT EXISTS public.amendment_watches (
  amendment_id uuid PRIMARY KEY REFERENCES constitutional_amendments(id),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  system_id uuid NOT NULL REFERENCES systems(id),
  dream_id uuid REFERENCES dreams(id),
  keys text[] NOT NULL,
  opened_at timestamp with time zone NOT NULL DEFAULT now(),
  closes_at timestamp with time zone NOT NULL,
  baseline jsonb NOT NULL,                  -- the guardrail figures of the period before
  status text NOT NULL DEFAULT 'watching' CHECK (status IN ('watching', 'closed', 'rolled_back')),
  last_checked_at timestamp with time zone,
  last_figures jsonb,
  rollback_amendment_id uuid REFERENCES constitutional_amendments(id),
  alerted_at timestamp with time zone
);
CREATE INDEX IF NOT EXISTS amendment_watches_tenant_status_idx ON amendment_watches (tenant_id, status);
SELECT public.clay_enable_tenant_isolation('public.amendment_watches', ARRAY['SELECT', 'INSERT', 'UPDATE']);
SELECT public.clay_require_same_tenant('public.amendment_watches', 'amendment_id', 'public.constitutional_amendments');
SELECT public.clay_require_same_tenant('public.amendment_watches', 'rollback_amendment_id', 'public.constitutional_amendments');
SELECT public.clay_require_same_tenant('public.amendment_watches', 'system_id', 'public.systems', true);
SELECT public.clay_require_same_tenant('public.amendment_watches', 'dream_id', 'public.dreams');
