-- Every admin job run (a runbook's job, from the fleet or from `ballast runbook run`), with its
-- report, kept for BALLAST_ADMIN_RUN_RETENTION_DAYS so an --enqueue'd run can be read after it
-- finished (`ballast runbook runs`). Operators' record: reports name objects of many tenants,
-- so the app role has no access at all.
CREATE TABLE admin_runs (
    id text PRIMARY KEY,
    kind text NOT NULL,
    runbook text,
    actor text NOT NULL,
    executed boolean NOT NULL,
    state text NOT NULL CHECK (state IN ('queued', 'done', 'failed')),
    failing integer NOT NULL DEFAULT 0,
    report jsonb,
    error text,
    queued_at timestamptz NOT NULL DEFAULT now(),
    finished_at timestamptz
);
CREATE INDEX admin_runs_recent ON admin_runs (queued_at DESC);
REVOKE ALL ON admin_runs FROM ballast_app;
