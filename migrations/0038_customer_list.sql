-- The customer list (issue 39): each subscription's monthly recurring revenue, computed from
-- its items when it is mirrored (a subscription has one currency), and each tenant's last
-- API call, written in batches by the api role (never a write per request). Expand-only.
ALTER TABLE subscriptions ADD COLUMN mrr_minor bigint NOT NULL DEFAULT 0;
ALTER TABLE subscriptions ADD COLUMN mrr_currency text;

CREATE TABLE tenant_activity (
    tenant_id           uuid PRIMARY KEY REFERENCES tenants (id),
    last_seen_at        timestamptz NOT NULL
);
CREATE INDEX tenant_activity_last_seen_idx ON tenant_activity (last_seen_at);

ALTER TABLE tenant_activity ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_activity FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_activity
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
