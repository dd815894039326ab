-- ARM-mode approval of a payroll file version before anything reaches BambooHR.
SET LOCAL ROLE clay_owner;

ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS approval_status text NOT NULL DEFAULT 'awaiting'
  CHECK (approval_status IN ('awaiting', 'approved', 'rejected'));
ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS approved_by text;
ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS approved_at timestamp with time zone;
ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS approval_reason text;
ALTER TABLE public.payroll_documents ADD COLUMN IF NOT EXISTS execution_id uuid REFERENCES executions(id);
