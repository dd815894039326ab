-- Payroll files that come back, come twice, or go away.
--
-- 1. A file's entries are always those of its current bytes: putting a file back to an earlier
--    content is a new version (the content-hash key of 009 made that impossible). What keeps a
--    re-run idempotent is that each file has at most one live version ('extracted', or 'duplicate'
--    for a copy of another file's live content), enforced below, and the file lock in the code.
-- 2. A renamed copy of a file whose content is already live in the tenant is a 'duplicate'
--    version: no entries, no deliveries, and duplicate_of names the version it copies.
-- 3. Quarantined bytes are kept under a name of their own (quarantined_as), one per content.
-- 4. payroll_file_sightings: every content seen for a file in the inbox, numbered per file, and
--    whether a run has processed it. The inbox sensor and `clay run` share it, so a file one of
--    them processed is not run again by the other.
SET LOCAL ROLE clay_owner;

ALTER TABLE public.payroll_documents DROP CONSTRAINT IF EXISTS payroll_documents_status_check;
ALTER TABLE public.payroll_documents ADD CONSTRAINT payroll_documents_status_check
  CHECK (status IN ('extracted', 'quarantined', 'superseded', 'duplicate'));
ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS duplicate_of uuid REFERENCES payroll_documents(id);
ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS quarantined_as text;

DROP INDEX IF EXISTS public.payroll_documents_content_extraction_key;
CREATE UNIQUE INDEX IF NOT EXISTS payroll_documents_one_live_version
  ON payroll_documents (tenant_id, source_file) WHERE status IN ('extracted', 'duplicate');
-- Duplicate detection: is this content live in another file of the tenant?
CREATE INDEX IF NOT EXISTS payroll_documents_live_content_idx
  ON payroll_documents (tenant_id, content_hash) WHERE status = 'extracted';
CREATE INDEX IF NOT EXISTS payroll_documents_duplicate_of_idx
  ON payroll_documents (duplicate_of) WHERE duplicate_of IS NOT NULL;

CREATE TABLE IF NOT EXISTS public.payroll_file_sightings (
  tenant_id uuid NOT NULL REFERENCES tenants(id) DEFAULT public.clay_current_tenant(),
  source_file text NOT NULL,
  seq integer NOT NULL CHECK (seq >= 1),  -- 1 for the first content seen, +1 at each change
  content_hash text NOT NULL,
  seen_at timestamp with time zone NOT NULL DEFAULT now(),
  processed_at timestamp with time zone,  -- NULL: no run has finished with this content yet
  outcome text CHECK (outcome IN ('extracted', 'duplicate', 'quarantined', 'failed_checks')),
  detail text,
  document_id uuid REFERENCES payroll_documents(id),
  PRIMARY KEY (tenant_id, source_file, seq)
);

ALTER TABLE public.payroll_file_sightings ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.payroll_file_sightings FORCE ROW LEVEL SECURITY;
DROP POLICY IF EXISTS tenant_isolation ON public.payroll_file_sightings;
CREATE POLICY tenant_isolation ON public.payroll_file_sightings FOR ALL
  USING (tenant_id = (SELECT public.clay_current_tenant()))
  WITH CHECK (tenant_id = (SELECT public.clay_current_tenant()));
GRANT SELECT, INSERT, UPDATE, DELETE ON public.payroll_file_sightings TO clay_app, clay_maintenance;

-- References stay inside the tenant (the helper of 012).
SELECT public.clay_require_same_tenant('public.payroll_documents', 'duplicate_of', 'public.payroll_documents');
SELECT public.clay_require_same_tenant('public.payroll_file_sightings', 'document_id', 'public.payroll_documents');
