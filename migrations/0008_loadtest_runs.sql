-- Load-test runs (`ballast loadtest`): the capacity baselines `ballast loadtest history`
-- draws over time. Global: they measure the fleet, not a tenant.
CREATE TABLE loadtest_runs (
    id                  uuid PRIMARY KEY,
    level               text NOT NULL,
    target              text NOT NULL,
    started_at          timestamptz NOT NULL,
    rate                integer NOT NULL,
    duration_secs       double precision NOT NULL,
    sent                bigint NOT NULL,
    throughput          double precision NOT NULL,
    p50_ms              double precision NOT NULL,
    p99_ms              double precision NOT NULL,
    max_ms              double precision NOT NULL,
    passed              boolean NOT NULL,
    report              jsonb NOT NULL
);
CREATE INDEX loadtest_runs_level_started_idx ON loadtest_runs (level, started_at);
