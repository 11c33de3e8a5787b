-- The last status of each maintenance service (issue 38): what its latest run did, how long it
-- took, its last error and when it last completed, written by the scheduler's leader after
-- every run and read by `ballast maintenance` and the overdue alert. One row per service; no
-- tenant data (counts and error texts of fleet-wide sweeps).
CREATE TABLE maintenance_status (
    service             text PRIMARY KEY,
    -- The period the service is expected to complete within (seconds).
    period_secs         integer NOT NULL,
    last_started_at     timestamptz NOT NULL,
    last_finished_at    timestamptz NOT NULL,
    last_duration_ms    double precision NOT NULL,
    -- What the latest run did, e.g. {"requeued": 3}; null when it failed.
    last_report         jsonb,
    last_error          text,
    -- The latest run that completed without an error.
    last_ok_at          timestamptz,
    runs                bigint NOT NULL DEFAULT 0,
    failures            bigint NOT NULL DEFAULT 0
);
REVOKE ALL ON maintenance_status FROM ballast_app;
