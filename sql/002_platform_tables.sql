-- The nine platform tables, column for column as the platform specification declares them.
-- Additions (never removals or renames), each marked "addition":
--   * tenant_id on payroll_entries and mcp_telemetry_log: the specification's own rule is that
--     every table carries tenant_id.
--   * every tenant_id defaults to the transaction's tenant (app.tenant_id), so inserts that do not
--     name a tenant (the platform's existing Supabase calls) land in the caller's tenant.
--   * *_embedding_model beside every vector column: the embedder (name@version) that produced it,
--     so vectors from different embedders are never compared.
SET LOCAL ROLE clay_owner;

-- The tenant of the current transaction, or NULL when none is set. Policies fail closed on NULL.
CREATE OR REPLACE FUNCTION public.clay_current_tenant() RETURNS uuid
  LANGUAGE sql STABLE PARALLEL SAFE
  AS $$ SELECT NULLIF(current_setting('app.tenant_id', true), '')::uuid $$;

CREATE TABLE IF NOT EXISTS public.tenants (
  id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
  name text NOT NULL,
  domain text UNIQUE,
  subscription_tier text DEFAULT 'starter' CHECK (subscription_tier IN (
    'starter', 'pro', 'enterprise'
  )),
  max_users integer DEFAULT 10,
  max_monthly_budget numeric DEFAULT 1000.00,
  created_at timestamp with time zone DEFAULT now(),
  is_active boolean DEFAULT true
);

CREATE TABLE IF NOT EXISTS public.systems (
  id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  name text NOT NULL UNIQUE,
  type text NOT NULL CHECK (type IN (
    'agent',
    'product',
    'component',
    'utility'
  )),
  description text,
  version text DEFAULT '1.0.0',
  capabilities text[] DEFAULT '{}',
  capabilities_embedding vector,
  capabilities_embedding_model text,                  -- addition
  constitution jsonb NOT NULL,
  total_executions integer DEFAULT 0,
  successful_executions integer DEFAULT 0,
  avg_cost_usd numeric DEFAULT 0,
  avg_execution_time_ms integer DEFAULT 0,
  avg_user_satisfaction numeric,
  deployment_type text CHECK (deployment_type IN (
    'n8n', 'fastapi', 'vercel', 'lambda', 'local'
  )),
  endpoint_url text,
  api_key_required boolean DEFAULT true,
  depends_on uuid[] DEFAULT '{}',
  reverse_dependencies uuid[] DEFAULT '{}',
  status text DEFAULT 'active' CHECK (status IN (
    'active', 'deprecated', 'maintenance', 'archived'
  )),
  lifecycle_state text DEFAULT 'HOT' CHECK (lifecycle_state IN (
    'HOT', 'WARM', 'COLD', 'ARCHIVED', 'PRUNED'
  )),
  last_accessed_at timestamp with time zone DEFAULT now(),
  access_count integer DEFAULT 0,
  created_at timestamp with time zone DEFAULT now(),
  updated_at timestamp with time zone DEFAULT now(),
  created_by text,
  documentation_url text,
  github_repo text
);

CREATE TABLE IF NOT EXISTS public.executions (
  id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  system_id uuid REFERENCES systems(id),
  system_name text NOT NULL,
  user_request text NOT NULL,
  request_embedding vector,
  request_embedding_model text,                       -- addition
  routing_path uuid[] DEFAULT '{}',
  routing_confidence numeric,
  input_data jsonb,
  output_data jsonb,
  governance_check jsonb NOT NULL,
  status text NOT NULL CHECK (status IN (
    'success',
    'failed',
    'partial',
    'timeout',
    'governance_blocked'
  )),
  error_message text,
  started_at timestamp with time zone DEFAULT now(),
  completed_at timestamp with time zone,
  duration_ms integer GENERATED ALWAYS AS (
    EXTRACT(epoch FROM (completed_at - started_at)) * 1000
  ) STORED,
  cost_usd numeric,
  user_satisfaction integer CHECK (user_satisfaction BETWEEN 1 AND 5),
  user_feedback text,
  should_retry_with_different_path boolean DEFAULT false,
  suggested_improvements jsonb,
  receipt_signature text,
  lifecycle_state text DEFAULT 'HOT' CHECK (lifecycle_state IN (
    'HOT',
    'WARM',
    'COLD',
    'ARCHIVED',
    'PRUNED'
  )),
  last_accessed_at timestamp with time zone DEFAULT now(),
  access_count integer DEFAULT 0
);

CREATE TABLE IF NOT EXISTS public.routing_rules (
  id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  request_pattern text NOT NULL,
  request_embedding vector,
  request_embedding_model text,                       -- addition
  recommended_system_id uuid REFERENCES systems(id),
  alternative_systems uuid[] DEFAULT '{}',
  based_on_executions integer DEFAULT 0,
  success_rate numeric,
  avg_cost_usd numeric,
  avg_duration_ms integer,
  confidence_score numeric NOT NULL CHECK (confidence_score BETWEEN 0 AND 1),
  last_validated timestamp with time zone DEFAULT now(),
  created_at timestamp with time zone DEFAULT now(),
  auto_generated boolean DEFAULT true,
  created_by text,
  is_active boolean DEFAULT true
);

CREATE TABLE IF NOT EXISTS public.dreams (
  id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  system_id uuid REFERENCES systems(id),
  system_name text NOT NULL,
  cycle_id text NOT NULL,
  mutations jsonb NOT NULL,
  test_input jsonb,
  normal_output jsonb,
  dream_output jsonb,
  outcome jsonb NOT NULL,
  promoted_to_production boolean DEFAULT false,
  promoted_at timestamp with time zone,
  dreamed_at timestamp with time zone DEFAULT now(),
  dream_duration_ms integer
);

CREATE TABLE IF NOT EXISTS public.constitutional_amendments (
  id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  system_id uuid REFERENCES systems(id),
  system_name text NOT NULL,
  amendment_type text NOT NULL CHECK (amendment_type IN (
    'dream_promotion',
    'manual_update',
    'governance_tightening',
    'capability_expansion'
  )),
  old_constitution jsonb NOT NULL,
  new_constitution jsonb NOT NULL,
  diff jsonb,
  evidence jsonb,
  approved_by text NOT NULL,
  approved_at timestamp with time zone DEFAULT now(),
  can_rollback boolean DEFAULT true,
  rolled_back_at timestamp with time zone
);

CREATE TABLE IF NOT EXISTS public.resources (
  id uuid PRIMARY KEY DEFAULT uuid_generate_v4(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  resource_type text NOT NULL CHECK (resource_type IN (
    'llm_tokens',
    'compute_hours',
    'api_calls',
    'storage_gb',
    'usd_budget'
  )),
  window_type text NOT NULL CHECK (window_type IN (
    'hourly', 'daily', 'weekly', 'monthly'
  )),
  window_start timestamp with time zone NOT NULL,
  window_end timestamp with time zone NOT NULL,
  total_budget numeric NOT NULL,
  used numeric DEFAULT 0,
  reserved numeric DEFAULT 0,
  available numeric GENERATED ALWAYS AS (total_budget - used - reserved) STORED,
  system_quotas jsonb DEFAULT '{}',
  alert_threshold numeric DEFAULT 0.80,
  alert_sent boolean DEFAULT false,
  created_at timestamp with time zone DEFAULT now(),
  updated_at timestamp with time zone DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.payroll_entries (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),  -- addition
  employee_id text NOT NULL,
  employee_name text,
  date date NOT NULL,
  amount numeric NOT NULL,
  reference text,
  source_file text NOT NULL,
  created_at timestamp with time zone DEFAULT now(),
  updated_at timestamp with time zone DEFAULT now()
);

CREATE TABLE IF NOT EXISTS public.mcp_telemetry_log (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),  -- addition
  server_name text NOT NULL,
  tool_name text NOT NULL,
  input_data jsonb,
  execution_time_ms numeric,
  success boolean,
  error_message text,
  timestamp timestamp with time zone DEFAULT now()
);
