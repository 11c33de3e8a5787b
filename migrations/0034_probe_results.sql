-- Uptime checks (issue 38): each check of each public listener, every minute, kept 7 days.
-- The `probe` fleet alert reads the newest of each. Global: no tenant named.
CREATE TABLE probe_results (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    target              text NOT NULL,
    check_name          text NOT NULL CHECK (check_name IN ('webhook', 'entitlements')),
    ok                  boolean NOT NULL,
    ms                  double precision NOT NULL,
    status              integer,
    error               text,
    at                  timestamptz NOT NULL
);
CREATE INDEX probe_results_latest_idx ON probe_results (target, check_name, at DESC);
REVOKE ALL ON probe_results FROM ballast_app;
