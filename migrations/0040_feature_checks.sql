-- What a tenant actually uses (issue 39): entitlement checks per feature per day (each
-- `GET /v1/entitlements/{feature}` the app makes), counted in memory by the api role and added
-- here in one statement every few seconds — never a write per request. Tenant data: RLS.
CREATE TABLE feature_checks (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    feature             text NOT NULL,
    day                 date NOT NULL,
    checks              bigint NOT NULL,
    PRIMARY KEY (tenant_id, day, feature)
);

ALTER TABLE feature_checks ENABLE ROW LEVEL SECURITY;
ALTER TABLE feature_checks FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON feature_checks
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
