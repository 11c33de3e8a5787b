-- Ballast's three roles, cluster-wide. Run as a superuser; idempotent (deploy/dev.sh runs it on
-- every start; the compose file's PostgreSQL runs it once when its data directory is new).
-- The passwords here are for a developer machine and the compose demo only: production sets
-- its own and passes them in DATABASE_URL, BALLAST_SYSTEM_DATABASE_URL and
-- BALLAST_OWNER_DATABASE_URL.
DO $$
BEGIN
  -- Runs migrations and owns the schema.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ballast_owner') THEN
    CREATE ROLE ballast_owner LOGIN PASSWORD 'ballast_owner' CREATEDB;
  END IF;
  -- Serves tenants: row-level security applies.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ballast_app') THEN
    CREATE ROLE ballast_app LOGIN PASSWORD 'ballast_app' NOBYPASSRLS;
  END IF;
  -- The named cross-tenant jobs: bypasses row-level security.
  IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'ballast_system') THEN
    CREATE ROLE ballast_system LOGIN PASSWORD 'ballast_system' BYPASSRLS;
  END IF;
END $$;
-- The operators' admin jobs (runbook db-pool-exhaustion) read every session's state and may
-- end sessions stuck idle in a transaction; neither makes the role a superuser.
GRANT pg_read_all_stats, pg_signal_backend TO ballast_system;
-- No JIT for the fleet's roles: their statements are short and compiling one costs more than it
-- saves. Direct connections also ask for it at startup; through PgBouncer, which does not pass
-- startup options on, the role's setting is what holds.
ALTER ROLE ballast_app SET jit = off;
ALTER ROLE ballast_system SET jit = off;
