-- Payroll pipeline: file versions, the audit trail of replaced entries, quarantine, the employee
-- directory cache and LLC mapping, the review queue and the BambooHR outbox. All tenant data, all
-- under the same row-level security as the platform tables.
SET LOCAL ROLE clay_owner;

-- Every version of every payroll file that arrived, good or bad.
CREATE TABLE IF NOT EXISTS public.payroll_documents (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  source_file text NOT NULL,
  content_hash text NOT NULL,
  version integer NOT NULL CHECK (version >= 1),
  status text NOT NULL CHECK (status IN ('extracted', 'quarantined', 'superseded')),
  pages integer,
  template text,
  entry_count integer NOT NULL DEFAULT 0,
  total_amount numeric,
  printed_total numeric,
  warnings jsonb NOT NULL DEFAULT '[]',
  quarantine_reason text,
  quarantine_detail text,
  received_at timestamp with time zone NOT NULL DEFAULT now(),
  superseded_at timestamp with time zone,
  superseded_reason text,
  UNIQUE (tenant_id, source_file, version),
  UNIQUE (tenant_id, source_file, content_hash)
);
CREATE INDEX IF NOT EXISTS payroll_documents_tenant_file_idx ON payroll_documents (tenant_id, source_file, version DESC);

-- Additions to payroll_entries: which document version and line an entry came from (the natural
-- key that makes re-runs idempotent), and what was printed beside it.
ALTER TABLE public.payroll_entries ADD COLUMN IF NOT EXISTS document_id uuid REFERENCES payroll_documents(id);
ALTER TABLE public.payroll_entries ADD COLUMN IF NOT EXISTS line_no integer;
ALTER TABLE public.payroll_entries ADD COLUMN IF NOT EXISTS currency text;
ALTER TABLE public.payroll_entries ADD COLUMN IF NOT EXISTS page integer;
ALTER TABLE public.payroll_entries ADD COLUMN IF NOT EXISTS printed_name text;
ALTER TABLE public.payroll_entries ADD COLUMN IF NOT EXISTS printed_employee_id text;
ALTER TABLE public.payroll_entries ADD COLUMN IF NOT EXISTS resolution jsonb;
CREATE UNIQUE INDEX IF NOT EXISTS payroll_entries_natural_key
  ON payroll_entries (tenant_id, source_file, line_no) WHERE line_no IS NOT NULL;

-- Entries a newer version of their file replaced: kept for the audit, with why.
CREATE TABLE IF NOT EXISTS public.payroll_entry_history (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  entry jsonb NOT NULL,
  document_id uuid REFERENCES payroll_documents(id),
  replaced_by_document_id uuid REFERENCES payroll_documents(id),
  reason text NOT NULL,
  replaced_at timestamp with time zone NOT NULL DEFAULT now()
);
CREATE INDEX IF NOT EXISTS payroll_entry_history_tenant_idx ON payroll_entry_history (tenant_id, replaced_at);

-- The BambooHR directory, cached per tenant, and the explicit LLC-to-employee mapping.
CREATE TABLE IF NOT EXISTS public.employee_directory (
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  employee_id text NOT NULL,
  first_name text NOT NULL,
  middle_name text NOT NULL DEFAULT '',
  last_name text NOT NULL,
  preferred_name text,
  details jsonb NOT NULL DEFAULT '{}',
  refreshed_at timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, employee_id)
);
CREATE TABLE IF NOT EXISTS public.llc_mappings (
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  llc_name text NOT NULL,
  employee_id text NOT NULL,
  created_by text,
  created_at timestamp with time zone NOT NULL DEFAULT now(),
  PRIMARY KEY (tenant_id, llc_name)
);

-- Entries whose payee was not confidently resolved: recorded, never uploaded until resolved.
CREATE TABLE IF NOT EXISTS public.payroll_review_queue (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  entry_id uuid NOT NULL REFERENCES payroll_entries(id) ON DELETE CASCADE,
  printed_name text NOT NULL,
  reason text NOT NULL,
  candidates jsonb NOT NULL DEFAULT '[]',
  status text NOT NULL DEFAULT 'open' CHECK (status IN ('open', 'resolved')),
  resolved_employee_id text,
  resolved_by text,
  resolved_at timestamp with time zone,
  created_at timestamp with time zone NOT NULL DEFAULT now(),
  UNIQUE (entry_id)
);
CREATE INDEX IF NOT EXISTS payroll_review_queue_tenant_status_idx ON payroll_review_queue (tenant_id, status);

-- Transactional outbox for BambooHR: queued in the same transaction as the entry.
CREATE TABLE IF NOT EXISTS public.bamboohr_outbox (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  entry_id uuid NOT NULL REFERENCES payroll_entries(id) ON DELETE CASCADE,
  document_id uuid NOT NULL REFERENCES payroll_documents(id),
  payload jsonb NOT NULL,
  status text NOT NULL DEFAULT 'awaiting_approval' CHECK (status IN (
    'awaiting_approval', 'awaiting_review', 'pending', 'delivered', 'dead_letter', 'rejected', 'cancelled'
  )),
  attempts integer NOT NULL DEFAULT 0,
  last_error text,
  remote_row_id text,
  next_attempt_at timestamp with time zone,
  delivered_at timestamp with time zone,
  created_at timestamp with time zone NOT NULL DEFAULT now(),
  UNIQUE (entry_id)
);
CREATE INDEX IF NOT EXISTS bamboohr_outbox_tenant_status_idx ON bamboohr_outbox (tenant_id, status);

DO $$
DECLARE
  tenant_table text;
BEGIN
  FOREACH tenant_table IN ARRAY ARRAY[
    'payroll_documents', 'payroll_entry_history', 'employee_directory', 'llc_mappings',
    'payroll_review_queue', 'bamboohr_outbox'
  ] LOOP
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', tenant_table);
    EXECUTE format('DROP POLICY IF EXISTS tenant_isolation ON public.%I', tenant_table);
    EXECUTE format(
      'CREATE POLICY tenant_isolation ON public.%I FOR ALL '
      'USING (tenant_id = (SELECT public.clay_current_tenant())) '
      'WITH CHECK (tenant_id = (SELECT public.clay_current_tenant()))',
      tenant_table);
    EXECUTE format('GRANT SELECT, INSERT, UPDATE, DELETE ON public.%I TO clay_app, clay_maintenance', tenant_table);
  END LOOP;
END
$$;
