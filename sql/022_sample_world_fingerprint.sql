-- The sample world's loads remember what the world was generated from (a hash of the generator and
-- its catalog), so that a project whose catalog changed replaces the world instead of keeping one
-- that no longer matches what the code says is true. Older loads have none: they are replaced once.
SET LOCAL ROLE clay_owner;

ALTER TABLE public.sample_world_loads ADD COLUMN IF NOT EXISTS world_sha256 text;
