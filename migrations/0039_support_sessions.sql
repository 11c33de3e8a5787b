-- Support access (issue 39): an operator's time-limited, read-only session as one tenant,
-- with a reason; its token (`bs_…`) is stored only as its hash. Every use is audited, and the
-- session shows in the tenant's timeline. Tenant data: row-level security.
CREATE TABLE support_sessions (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    operator            text NOT NULL,
    reason              text NOT NULL CHECK (length(reason) BETWEEN 3 AND 500),
    token_prefix        text NOT NULL UNIQUE,
    token_hash          bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    revoked_at          timestamptz,
    revoked_by          text
);
CREATE INDEX support_sessions_tenant_id_idx ON support_sessions (tenant_id, created_at DESC);

ALTER TABLE support_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE support_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON support_sessions
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
