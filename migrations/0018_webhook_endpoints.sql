-- Endpoints a tenant registers for outbound webhooks (POST /v1/webhook-endpoints): where to
-- deliver, which event types, and the signing secret Ballast generated (kept to sign; shown to
-- the tenant once). A rotation keeps the previous secret signing until previous_secret_until,
-- so receivers can switch without missing a message. Deleting keeps the row (the delivery log
-- refers to it) with deleted_at set.
CREATE TABLE webhook_endpoints (
    id                      uuid PRIMARY KEY,
    tenant_id               uuid NOT NULL REFERENCES tenants (id),
    url                     text NOT NULL,
    event_types             text[] NOT NULL,
    secret                  text NOT NULL,
    previous_secret         text,
    previous_secret_until   timestamptz,
    disabled_at             timestamptz,
    disabled_reason         text,
    failing_since           timestamptz,
    created_at              timestamptz NOT NULL DEFAULT now(),
    deleted_at              timestamptz
);
CREATE INDEX webhook_endpoints_tenant_id_idx ON webhook_endpoints (tenant_id) WHERE deleted_at IS NULL;

ALTER TABLE webhook_endpoints ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_endpoints FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_endpoints
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
