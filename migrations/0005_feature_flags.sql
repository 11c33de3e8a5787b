-- Feature flags: product switches rolled out to a share of tenants. Global (no tenant data):
-- a flag names no tenant, and each tenant's answer is computed from a stable hash of
-- (flag, tenant), so this table needs no row-level security. Only the system role (the
-- `ballast flags` CLI) changes it; the app role reads it to fill the cache.
CREATE TABLE feature_flags (
    name                text PRIMARY KEY CHECK (name ~ '^[a-z][a-z0-9_.-]{0,62}$'),
    description         text NOT NULL DEFAULT '',
    enabled             boolean NOT NULL DEFAULT false,
    rollout_percent     smallint NOT NULL DEFAULT 100 CHECK (rollout_percent BETWEEN 0 AND 100),
    updated_at          timestamptz NOT NULL DEFAULT now(),
    updated_by          text NOT NULL
);

REVOKE INSERT, UPDATE, DELETE ON feature_flags FROM ballast_app;
