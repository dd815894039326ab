-- Routing memory: what the rule learner keeps beside routing_rules.
--
--   routing_rules (additions)  the similarity figures the router scales a match by, and the rule's
--                              last use by the router.
--   routing_rule_prototypes    several vectors per learned rule (a request kind rarely has one
--                              centre); the router scores a rule by its best prototype.
--   routing_memberships        which rule each execution was learned into. The incremental path
--                              only looks at executions without a membership; statistics are
--                              recomputed from memberships with set-based SQL.
-- Rules written by people have no prototypes: the router falls back to their request_embedding.
SET LOCAL ROLE clay_owner;

ALTER TABLE public.routing_rules
  ADD COLUMN IF NOT EXISTS member_similarity numeric,         -- median similarity of members to the rule
  ADD COLUMN IF NOT EXISTS similarity_floor numeric,          -- 5th percentile less a tolerance: below it, not a member
  ADD COLUMN IF NOT EXISTS last_used_at timestamp with time zone,
  ADD COLUMN IF NOT EXISTS times_used integer NOT NULL DEFAULT 0,
  ADD COLUMN IF NOT EXISTS updated_at timestamp with time zone DEFAULT now(),
  ADD COLUMN IF NOT EXISTS deactivated_at timestamp with time zone,
  ADD COLUMN IF NOT EXISTS deactivation_reason text;

CREATE TABLE IF NOT EXISTS public.routing_rule_prototypes (
  rule_id uuid NOT NULL REFERENCES routing_rules(id) ON DELETE CASCADE,
  ordinal smallint NOT NULL,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  embedding vector NOT NULL,
  embedding_model text NOT NULL,
  members integer NOT NULL CHECK (members >= 0),
  PRIMARY KEY (rule_id, ordinal)
);
CREATE INDEX IF NOT EXISTS routing_rule_prototypes_tenant_idx ON routing_rule_prototypes (tenant_id, rule_id);

CREATE TABLE IF NOT EXISTS public.routing_memberships (
  execution_id uuid PRIMARY KEY REFERENCES executions(id) ON DELETE CASCADE,
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  rule_id uuid NOT NULL REFERENCES routing_rules(id) ON DELETE CASCADE,
  similarity real NOT NULL,
  embedding_model text NOT NULL,
  assigned_at timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS routing_memberships_tenant_rule_idx ON routing_memberships (tenant_id, rule_id);
CREATE INDEX IF NOT EXISTS routing_rules_tenant_active_idx ON routing_rules (tenant_id, is_active, auto_generated);

-- Same pattern as 004: one partial HNSW index per embedder, on an expression cast to its dimension.
CREATE INDEX IF NOT EXISTS routing_rule_prototypes_hashing1_hnsw ON routing_rule_prototypes
  USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE embedding_model = 'hashing@1';
CREATE INDEX IF NOT EXISTS routing_rule_prototypes_minilm1_hnsw ON routing_rule_prototypes
  USING hnsw ((embedding::vector(384)) vector_cosine_ops) WHERE embedding_model = 'minilm@1';
CREATE INDEX IF NOT EXISTS routing_rule_prototypes_openai1_hnsw ON routing_rule_prototypes
  USING hnsw ((embedding::vector(1536)) vector_cosine_ops) WHERE embedding_model = 'openai@1';

DO $$
DECLARE
  tenant_table text;
BEGIN
  FOREACH tenant_table IN ARRAY ARRAY['routing_rule_prototypes', 'routing_memberships'] LOOP
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON public.%I', tenant_table);
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
