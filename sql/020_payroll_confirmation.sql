SET LOCAL ROLE clay_owner;

-- Entries read with low confidence (OCR of a scan) wait in the review queue for a person to confirm
-- them; their BambooHR delivery stays awaiting_review until then, whatever the file's approval.
ALTER TABLE public.payroll_review_queue
  ADD COLUMN IF NOT EXISTS needs_confirmation boolean NOT NULL DEFAULT false,
  ADD COLUMN IF NOT EXISTS confirmed_by text,
  ADD COLUMN IF NOT EXISTS confirmed_at timestamp with time zone;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_constraint WHERE conname = 'payroll_review_queue_confirmation_check') THEN
    ALTER TABLE public.payroll_review_queue ADD CONSTRAINT payroll_review_queue_confirmation_check
      CHECK ((confirmed_by IS NULL) = (confirmed_at IS NULL) AND (needs_confirmation OR confirmed_by IS NULL));
  END IF;
END $$;
