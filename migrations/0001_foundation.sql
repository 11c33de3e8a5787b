-- Foundation schema. Run by the owner role (ballast_owner); the app role (ballast_app, no
-- BYPASSRLS) and the system role (ballast_system, BYPASSRLS) are created by deploy/dev.sh
-- (or your platform) because roles are cluster-wide, not per database.
--
-- Tenant isolation is enforced here, not in application code: every table holding tenant
-- data has ENABLE + FORCE ROW LEVEL SECURITY and a policy on app.tenant_id. With no context
-- the setting is NULL (or '' after a SET LOCAL ended), the comparison is NULL, no row passes.

CREATE TABLE tenants (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL,
    status              text NOT NULL DEFAULT 'active' CHECK (status IN ('active', 'restricted', 'closed')),
    created_at          timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE api_keys (
    id                  uuid PRIMARY KEY,
    -- NULL: a service-wide key, visible only to the system role.
    tenant_id           uuid REFERENCES tenants (id),
    name                text NOT NULL,
    prefix              text NOT NULL UNIQUE,
    key_hash            bytea NOT NULL,
    scopes              text[] NOT NULL DEFAULT '{}',
    created_at          timestamptz NOT NULL DEFAULT now(),
    revoked_at          timestamptz
);
CREATE INDEX api_keys_tenant_id_idx ON api_keys (tenant_id);

-- The durable webhook inbox: the Stripe event id is the idempotency key.
CREATE TABLE stripe_events (
    id                  text PRIMARY KEY,
    type                text NOT NULL,
    -- NULL until the event is routed to a tenant (routing runs on the system pool).
    tenant_id           uuid REFERENCES tenants (id),
    livemode            boolean NOT NULL DEFAULT false,
    api_version         text,
    stripe_created      timestamptz NOT NULL,
    payload             jsonb NOT NULL,
    status              text NOT NULL DEFAULT 'received'
                        CHECK (status IN ('received', 'queued', 'processed', 'ignored', 'unmatched', 'failed')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    queued_at           timestamptz,
    processed_at        timestamptz
);
CREATE INDEX stripe_events_tenant_id_idx ON stripe_events (tenant_id);
CREATE INDEX stripe_events_unqueued_idx ON stripe_events (received_at) WHERE status = 'received';

-- The billing mirror: Stripe's state as of the newest event we applied per object.
CREATE TABLE customers (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    email               text,
    name                text,
    deleted             boolean NOT NULL DEFAULT false,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX customers_tenant_id_idx ON customers (tenant_id);

CREATE TABLE subscriptions (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    customer_id         text NOT NULL REFERENCES customers (id),
    status              text NOT NULL,
    plan_id             text,
    current_period_end  timestamptz,
    cancel_at_period_end boolean NOT NULL DEFAULT false,
    trial_end           timestamptz,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX subscriptions_tenant_id_idx ON subscriptions (tenant_id);
CREATE INDEX subscriptions_customer_id_idx ON subscriptions (customer_id);

CREATE TABLE invoices (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    customer_id         text NOT NULL REFERENCES customers (id),
    subscription_id     text REFERENCES subscriptions (id),
    status              text NOT NULL,
    -- Money in the currency's minor unit (cents), as Stripe sends it.
    amount_due          bigint NOT NULL DEFAULT 0,
    amount_paid         bigint NOT NULL DEFAULT 0,
    currency            text NOT NULL,
    attempt_count       integer NOT NULL DEFAULT 0,
    next_payment_attempt timestamptz,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoices_tenant_id_idx ON invoices (tenant_id);
CREATE INDEX invoices_customer_id_idx ON invoices (customer_id);
CREATE INDEX invoices_subscription_id_idx ON invoices (subscription_id);

CREATE TABLE entitlements (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    feature             text NOT NULL,
    enabled             boolean NOT NULL,
    limit_value         bigint,
    source              text NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (tenant_id, feature)
);

-- Who did what, when, with which parameters, and how it ended. NULL tenant: a fleet-wide action.
CREATE TABLE audit_log (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id           uuid REFERENCES tenants (id),
    actor               text NOT NULL,
    action              text NOT NULL,
    params              jsonb NOT NULL DEFAULT '{}',
    outcome             text NOT NULL,
    at                  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX audit_log_tenant_id_idx ON audit_log (tenant_id);

-- Jobs that exhausted their attempts or could never succeed (malformed payload, no handler).
-- Kept in PostgreSQL, not only Redis: Redis is a queue, never the only copy of a failure.
CREATE TABLE job_dead_letters (
    id                  uuid PRIMARY KEY,
    job_id              text NOT NULL,
    kind                text NOT NULL,
    tenant_id           uuid REFERENCES tenants (id),
    envelope            jsonb NOT NULL,
    attempts            integer NOT NULL,
    error               text NOT NULL,
    failed_at           timestamptz NOT NULL DEFAULT now(),
    retried_at          timestamptz
);
CREATE INDEX job_dead_letters_tenant_id_idx ON job_dead_letters (tenant_id);
CREATE INDEX job_dead_letters_open_idx ON job_dead_letters (failed_at) WHERE retried_at IS NULL;

-- Row-level security: default deny, one policy per table on the session's tenant context.
DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['api_keys', 'stripe_events', 'customers', 'subscriptions', 'invoices',
                             'entitlements', 'audit_log', 'job_dead_letters']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
    END LOOP;
END $$;

ALTER TABLE tenants ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenants FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenants
    USING (id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO ballast_app, ballast_system;
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO ballast_app, ballast_system;
GRANT SELECT ON _sqlx_migrations TO ballast_app, ballast_system;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO ballast_app, ballast_system;
ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO ballast_app, ballast_system;
