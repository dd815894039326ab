-- The router scores learned rules by their prototypes (HNSW over routing_rule_prototypes) and every
-- other active rule (written by people, or learned elsewhere) by its request_embedding. Those are
-- few beside thousands of learned ones: this partial index lets the router score them all exactly
-- without reading the learned rules. Learned rules are the ones created_by 'routing-learner'.
SET LOCAL ROLE clay_owner;

CREATE INDEX IF NOT EXISTS routing_rules_not_learned_active_idx ON routing_rules (tenant_id, request_embedding_model)
  WHERE is_active AND created_by IS DISTINCT FROM 'routing-learner';
