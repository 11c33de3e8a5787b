-- Stripe webhooks end to end: tenant mapping, routing columns on the inbox, the rest of the
-- billing mirror (charges, disputes), side-effect rows, and entitlement expiry.

-- A tenant's Stripe customer, set at checkout (or from customer.metadata.tenant_id).
ALTER TABLE tenants ADD COLUMN stripe_customer_id text UNIQUE;

-- Routing: the customer an event concerns, so parked (unmatched) events are found again when
-- the mapping appears; the object id, so operators can follow one object's history.
ALTER TABLE stripe_events ADD COLUMN customer_id text;
ALTER TABLE stripe_events ADD COLUMN object_id text;
CREATE INDEX stripe_events_unmatched_idx ON stripe_events (customer_id) WHERE status = 'unmatched';

ALTER TABLE subscriptions ADD COLUMN price_id text;
ALTER TABLE subscriptions ADD COLUMN product_id text;
-- When the subscription became past_due (Stripe's event time): the grace period counts from it.
ALTER TABLE subscriptions ADD COLUMN past_due_since timestamptz;
ALTER TABLE subscriptions ADD COLUMN default_payment_method text;

ALTER TABLE invoices ADD COLUMN billing_reason text;
-- Stripe delivers an invoice's events before its subscription's as often as after: the mirror
-- cannot require the subscription row to exist first (the column stays indexed for joins).
ALTER TABLE invoices DROP CONSTRAINT invoices_subscription_id_fkey;

CREATE TABLE charges (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    customer_id         text NOT NULL REFERENCES customers (id),
    invoice_id          text,
    currency            text NOT NULL,
    amount              bigint NOT NULL,
    amount_refunded     bigint NOT NULL DEFAULT 0,
    refunded            boolean NOT NULL DEFAULT false,
    disputed            boolean NOT NULL DEFAULT false,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX charges_tenant_id_idx ON charges (tenant_id);
CREATE INDEX charges_customer_id_idx ON charges (customer_id);

CREATE TABLE disputes (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    charge_id           text NOT NULL,
    status              text NOT NULL,
    amount              bigint NOT NULL,
    currency            text NOT NULL,
    reason              text,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX disputes_tenant_id_idx ON disputes (tenant_id);

-- Side effects of billing events (emails, dunning steps), written in the transaction that
-- applied the event and keyed by what they are about, so a duplicate or replayed event
-- cannot write one twice. Later workers (email, dunning) consume them.
CREATE TABLE billing_effects (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    effect_key          text NOT NULL,
    kind                text NOT NULL,
    subject_id          text NOT NULL,
    payload             jsonb NOT NULL DEFAULT '{}',
    event_id            text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    consumed_at         timestamptz,
    UNIQUE (tenant_id, effect_key)
);

-- Access that ends by itself (past_due grace, cancel at period end): readers treat an expired
-- row as disabled, so access ends on time even before the next recompute.
ALTER TABLE entitlements ADD COLUMN plan_id text;
ALTER TABLE entitlements ADD COLUMN expires_at timestamptz;

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['charges', 'disputes', 'billing_effects']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
    END LOOP;
END $$;
