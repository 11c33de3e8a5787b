-- Alerts on the fleet's own health (issue 38): the state of each (rule, subject), and which
-- member claimed the latest evaluation round. Global: no tenant is named.
CREATE TABLE fleet_alerts (
    alert_key           text PRIMARY KEY,
    rule                text NOT NULL,
    state               text NOT NULL CHECK (state IN ('ok', 'pending', 'firing')),
    -- When the condition started to hold (a rule with a hold time fires once it has held).
    pending_since       timestamptz,
    since               timestamptz NOT NULL,
    transitions         bigint NOT NULL DEFAULT 0,
    value               double precision NOT NULL,
    threshold           double precision NOT NULL,
    summary             text NOT NULL,
    evaluated_at        timestamptz NOT NULL
);

-- One row: the latest round claimed. A member evaluates only when it moves this on.
CREATE TABLE fleet_health_rounds (
    one                 boolean PRIMARY KEY DEFAULT true CHECK (one),
    claimed_at          timestamptz NOT NULL,
    claimed_by          text NOT NULL
);
REVOKE ALL ON fleet_alerts, fleet_health_rounds FROM ballast_app;
