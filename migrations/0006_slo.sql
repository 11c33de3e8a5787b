-- Service level objectives: good/valid event counts per minute, alert state, and the
-- notification outbox. Global tables: they measure the product, not any tenant's data (no
-- tenant is named in them), so they carry no row-level security.

-- One row per SLO, minute and source (a Ballast member's intake, or an app service's
-- reporter). A source reports a minute's totals so far and a later report replaces them, so a
-- retried report never double-counts. Kept for the longest window plus a day.
CREATE TABLE slo_minutes (
    slo                 text NOT NULL,
    minute              timestamptz NOT NULL CHECK (date_trunc('minute', minute) = minute),
    source              text NOT NULL,
    good                bigint NOT NULL CHECK (good >= 0),
    valid               bigint NOT NULL CHECK (valid >= good),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (slo, minute, source)
);

-- The state of each alert (an SLO and a severity: page or ticket).
CREATE TABLE slo_alerts (
    alert_key           text PRIMARY KEY,
    slo                 text NOT NULL,
    severity            text NOT NULL CHECK (severity IN ('page', 'ticket')),
    state               text NOT NULL CHECK (state IN ('firing', 'resolved')),
    since               timestamptz NOT NULL,
    transitions         bigint NOT NULL DEFAULT 0,
    evaluated_at        timestamptz NOT NULL
);

-- One row per alert transition, delivered once to the configured webhook.
CREATE TABLE slo_notifications (
    id                  uuid PRIMARY KEY,
    alert_key           text NOT NULL REFERENCES slo_alerts (alert_key),
    transition          bigint NOT NULL,
    state               text NOT NULL CHECK (state IN ('firing', 'resolved')),
    details             jsonb NOT NULL,
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead', 'unconfigured')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    UNIQUE (alert_key, transition)
);
CREATE INDEX slo_notifications_pending_idx ON slo_notifications (created_at) WHERE status = 'pending';
