-- Backups and restore rehearsals (issue 38): each run of `db.backup` and
-- `db.restore-rehearsal`, what it produced or found, and whether it passed. The backup alert
-- reads the newest of each. Global: no tenant named.
CREATE TABLE backup_runs (
    id                  uuid PRIMARY KEY,
    kind                text NOT NULL CHECK (kind IN ('backup', 'rehearsal')),
    started_at          timestamptz NOT NULL,
    finished_at         timestamptz NOT NULL,
    ok                  boolean NOT NULL,
    -- The dump written or restored.
    file                text,
    bytes               bigint,
    sha256              text,
    -- A rehearsal: how long the restore took and how old the newest restored row was.
    restore_secs        double precision,
    data_age_secs       double precision,
    report              jsonb NOT NULL,
    error               text
);
CREATE INDEX backup_runs_kind_finished_idx ON backup_runs (kind, finished_at DESC);
REVOKE ALL ON backup_runs FROM ballast_app;
