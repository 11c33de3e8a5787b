-- Every Stripe customer a tenant has had: the current one (tenants.stripe_customer_id, kept
-- as the fast lookup) and the ones before it, unbound when Stripe deleted them. A late event
-- of a past customer still routes to its tenant (its history is mirrored), and a later
-- customer whose checkout or metadata names the tenant binds (issue 37).
CREATE TABLE tenant_customers (
    customer_id         text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    bound_at            timestamptz NOT NULL DEFAULT now(),
    unbound_at          timestamptz,
    unbound_reason      text CHECK (unbound_reason IN ('customer_deleted'))
);
CREATE INDEX tenant_customers_tenant_id_idx ON tenant_customers (tenant_id);
INSERT INTO tenant_customers (customer_id, tenant_id, bound_at)
    SELECT stripe_customer_id, id, created_at FROM tenants WHERE stripe_customer_id IS NOT NULL;

ALTER TABLE tenant_customers ENABLE ROW LEVEL SECURITY;
ALTER TABLE tenant_customers FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON tenant_customers
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- A case ends with its subscription (ended, or paused by Stripe) or its customer (deleted),
-- not only with its invoice.
ALTER TABLE dunning_cases DROP CONSTRAINT dunning_cases_status_check;
ALTER TABLE dunning_cases ADD CONSTRAINT dunning_cases_status_check
    CHECK (status IN ('open', 'recovered', 'canceled', 'manual_review', 'written_off', 'subscription_ended', 'paused', 'customer_deleted'));
