-- A file version is its content *and* what was extracted from it: re-extracting the same bytes
-- after a template or extractor change, with a different result, is a new version (with the old
-- one kept in the audit trail), while re-running an unchanged extraction stays a no-op.
SET LOCAL ROLE clay_owner;

ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS extraction_digest text NOT NULL DEFAULT '';
ALTER TABLE public.payroll_documents DROP CONSTRAINT IF EXISTS payroll_documents_tenant_id_source_file_content_hash_key;
CREATE UNIQUE INDEX IF NOT EXISTS payroll_documents_content_extraction_key
  ON payroll_documents (tenant_id, source_file, content_hash, extraction_digest);
