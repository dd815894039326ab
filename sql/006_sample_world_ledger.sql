-- Which sample world (seed, scale, anchor day) is loaded, so `clay seed` is idempotent and a
-- different request replaces the sample tenants' data instead of piling a second world on top.
-- Platform metadata, no tenant data: only the maintenance role reads or writes it.
SET LOCAL ROLE clay_owner;

CREATE TABLE IF NOT EXISTS public.sample_world_loads (
  id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
  seed integer NOT NULL,
  scale integer NOT NULL CHECK (scale >= 1),
  anchor_date date NOT NULL,
  row_counts jsonb NOT NULL,
  loaded_at timestamp with time zone NOT NULL DEFAULT now()
);
ALTER TABLE public.sample_world_loads ENABLE ROW LEVEL SECURITY;
ALTER TABLE public.sample_world_loads FORCE ROW LEVEL SECURITY;
-- No policy for clay_app: it sees nothing. clay_maintenance bypasses row-level security.
GRANT SELECT, INSERT, DELETE ON public.sample_world_loads TO clay_maintenance;
