-- Payment intents (payment_intent.processing / succeeded / payment_failed / canceled, issue
-- 37): a bank debit takes days to settle, and while its payment is `processing` a new
-- subscription stays `incomplete`; what it grants meanwhile is `[processing] access` in
-- policy/dunning.toml. Stripe's latest state wins; at the same second a settled status beats
-- `processing` (a payment leaves `processing` only by settling).
CREATE TABLE payment_intents (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    customer_id         text,
    amount              bigint NOT NULL,
    currency            text NOT NULL,
    status              text NOT NULL,
    -- The decline or return code of the last failed attempt.
    last_error_code     text,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX payment_intents_tenant_id_idx ON payment_intents (tenant_id);
CREATE INDEX payment_intents_processing_idx ON payment_intents (customer_id) WHERE status = 'processing';

ALTER TABLE payment_intents ENABLE ROW LEVEL SECURITY;
ALTER TABLE payment_intents FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON payment_intents
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
