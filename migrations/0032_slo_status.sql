-- Each SLO's figures as the latest evaluation found them (issue 38): what `/metrics` exports as
-- `ballast_slo_sli_ratio` and `ballast_slo_budget_remaining_ratio` for the dashboards, written
-- by `slo.evaluate` every minute. Global: no tenant named.
CREATE TABLE slo_status (
    slo                 text PRIMARY KEY,
    sli                 double precision NOT NULL,
    budget_remaining    double precision NOT NULL,
    evaluated_at        timestamptz NOT NULL
);
REVOKE ALL ON slo_status FROM ballast_app;
