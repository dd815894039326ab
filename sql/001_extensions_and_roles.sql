-- Extensions and the three roles every later migration relies on.
--
-- Roles (cluster-wide, so created only when missing):
--   clay_owner        owns every table; migrations run as it. NOLOGIN.
--   clay_app          what the pipelines, the CLI and the tests use. Not superuser, no BYPASSRLS,
--                     owns nothing: row-level security always applies to it.
--   clay_maintenance  cross-tenant maintenance (pruning, global analytics, seeding tenants).
--                     BYPASSRLS; used only by named jobs.
-- The role running the migrations is made a member of all three so it can SET ROLE to them.

CREATE EXTENSION IF NOT EXISTS vector;

-- uuid_generate_v4() comes from uuid-ossp where the server ships it (Supabase does). Builds without
-- it (the embedded server) get a SQL function with the same name and the same result: a random v4 UUID.
DO $$
BEGIN
  IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'uuid-ossp') THEN
    CREATE EXTENSION IF NOT EXISTS "uuid-ossp";
  ELSIF to_regprocedure('public.uuid_generate_v4()') IS NULL THEN
    CREATE FUNCTION public.uuid_generate_v4() RETURNS uuid
      LANGUAGE sql VOLATILE PARALLEL SAFE AS 'SELECT gen_random_uuid()';
  END IF;
END
$$;

DO $$
BEGIN
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clay_owner') THEN
    CREATE ROLE clay_owner NOLOGIN NOSUPERUSER NOBYPASSRLS;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clay_app') THEN
    CREATE ROLE clay_app LOGIN NOSUPERUSER NOBYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
  IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'clay_maintenance') THEN
    CREATE ROLE clay_maintenance LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE;
  END IF;
END
$$;

-- Re-assert the attributes that isolation depends on, in case the roles pre-existed with others.
ALTER ROLE clay_app NOSUPERUSER NOBYPASSRLS;
ALTER ROLE clay_owner NOSUPERUSER NOBYPASSRLS;

GRANT clay_owner TO CURRENT_USER;
GRANT clay_app TO CURRENT_USER;
GRANT clay_maintenance TO CURRENT_USER;

GRANT USAGE, CREATE ON SCHEMA public TO clay_owner;
GRANT USAGE ON SCHEMA public TO clay_app, clay_maintenance;
