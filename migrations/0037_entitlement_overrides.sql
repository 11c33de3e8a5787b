-- Overrides (issue 39): an operator grants or revokes a feature, sets a feature's limit, or
-- raises a usage metric's monthly limit for one tenant, with a reason and an expiry (or none).
-- Entitlement reads layer the live ones over what billing grants (source `override`); the
-- expiry sweep ends them at their time. Who set and who ended each is kept with it and in the
-- audit log. Tenant data: row-level security.
CREATE TABLE entitlement_overrides (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    kind                text NOT NULL CHECK (kind IN ('grant', 'revoke', 'feature_limit', 'usage_limit')),
    -- The feature (grant, revoke, feature_limit) or the usage metric (usage_limit).
    target              text NOT NULL,
    -- The limit (feature_limit, usage_limit).
    value               bigint CHECK (value >= 0),
    reason              text NOT NULL CHECK (length(reason) BETWEEN 3 AND 500),
    expires_at          timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text NOT NULL,
    -- Revoked by an operator, replaced by a newer override, or expired.
    ended_at            timestamptz,
    ended_by            text,
    CHECK ((kind IN ('feature_limit', 'usage_limit')) = (value IS NOT NULL))
);
-- One live override per tenant and what it decides (on/off, a feature's limit, a metric's).
CREATE UNIQUE INDEX entitlement_overrides_live_idx
    ON entitlement_overrides (tenant_id, (CASE WHEN kind IN ('grant', 'revoke') THEN 'switch' ELSE kind END), target)
    WHERE ended_at IS NULL;
CREATE INDEX entitlement_overrides_expiring_idx ON entitlement_overrides (expires_at) WHERE ended_at IS NULL AND expires_at IS NOT NULL;

ALTER TABLE entitlement_overrides ENABLE ROW LEVEL SECURITY;
ALTER TABLE entitlement_overrides FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON entitlement_overrides
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
