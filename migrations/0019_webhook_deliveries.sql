-- Outbound webhook messages and their delivery. A message is what an app service queued
-- (webhook.deliver through POST /v1/jobs): its event type and the exact body Ballast signs and
-- sends, written before the 202 so a Redis crash loses nothing. A delivery is that message to
-- one endpoint subscribed to its type when it was queued: pending until an attempt gets a 2xx
-- (delivered), its attempts run out (failed; a tenant may re-send it, which makes a new
-- delivery), or the endpoint was disabled or deleted (skipped). Every attempt is kept with the
-- endpoint's answer, the body cut to 2 KiB, for the delivery log.
CREATE TABLE webhook_messages (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    event_type          text NOT NULL,
    body                text NOT NULL,
    idempotency_key     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    UNIQUE (tenant_id, idempotency_key)
);

CREATE TABLE webhook_deliveries (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    message_id          uuid NOT NULL REFERENCES webhook_messages (id),
    endpoint_id         uuid NOT NULL REFERENCES webhook_endpoints (id),
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'failed', 'skipped')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz
);
CREATE INDEX webhook_deliveries_tenant_id_idx ON webhook_deliveries (tenant_id);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_message_idx ON webhook_deliveries (message_id);
-- The sweep re-queues pending deliveries whose push was lost.
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (created_at) WHERE status = 'pending';
-- The retention prune deletes finished deliveries (with their attempts) after 30 days.
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;

CREATE TABLE webhook_attempts (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    delivery_id         uuid NOT NULL REFERENCES webhook_deliveries (id),
    attempt             integer NOT NULL,
    attempted_at        timestamptz NOT NULL,
    duration_ms         integer NOT NULL,
    status_code         integer,
    response_body       text,
    error               text
);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);
CREATE INDEX webhook_attempts_tenant_id_idx ON webhook_attempts (tenant_id);

ALTER TABLE webhook_messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_messages FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_messages
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
ALTER TABLE webhook_deliveries ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_deliveries
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
ALTER TABLE webhook_attempts ENABLE ROW LEVEL SECURITY;
ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON webhook_attempts
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
