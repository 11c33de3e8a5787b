-- Usage metering: the ledger that Redis counters are flushed into, exactly once, and the
-- record of each flushed window (its id is written in the same transaction as its rows).

-- One row per (tenant, metric, usage minute, flush). `id` is derived from those four,
-- so a re-flush cannot create a second row, and it is the Stripe meter event's identifier,
-- so a re-report is deduplicated by Stripe too.
CREATE TABLE usage_ledger (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    metric              text NOT NULL,
    usage_minute        timestamptz NOT NULL,
    flush_id            text NOT NULL,
    quantity            bigint NOT NULL CHECK (quantity > 0),
    created_at          timestamptz NOT NULL DEFAULT now(),
    report_status       text NOT NULL DEFAULT 'pending' CHECK (report_status IN ('pending', 'reported', 'dead')),
    report_error        text,
    reported_at         timestamptz
);
CREATE INDEX usage_ledger_tenant_id_idx ON usage_ledger (tenant_id, metric, usage_minute);
CREATE INDEX usage_ledger_pending_idx ON usage_ledger (created_at) WHERE report_status = 'pending';

-- Flushes: each claimed one arrival window's counts (moved aside in Redis under a fresh id).
-- Fleet-wide bookkeeping, no tenant data.
CREATE TABLE usage_flushes (
    flush_id            text PRIMARY KEY,
    arrival_window      bigint NOT NULL,
    rows                integer NOT NULL,
    flushed_at          timestamptz NOT NULL DEFAULT now()
);

ALTER TABLE usage_ledger ENABLE ROW LEVEL SECURITY;
ALTER TABLE usage_ledger FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON usage_ledger
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
