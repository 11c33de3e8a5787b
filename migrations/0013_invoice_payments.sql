-- Since API 2025-03-31 a charge no longer names its invoice: Stripe links them through
-- invoice payments (`invoice_payment.paid`: the invoice and the payment intent or charge that
-- paid it). The mirror keeps each invoice payment, and a charge's invoice is found through
-- them whichever of the two arrives first.
CREATE TABLE invoice_payments (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    invoice_id          text NOT NULL,
    payment_intent      text,
    charge_id           text,
    status              text NOT NULL,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX invoice_payments_tenant_id_idx ON invoice_payments (tenant_id);
CREATE INDEX invoice_payments_payment_intent_idx ON invoice_payments (payment_intent);
ALTER TABLE charges ADD COLUMN payment_intent text;
CREATE INDEX charges_payment_intent_idx ON charges (payment_intent);

ALTER TABLE invoice_payments ENABLE ROW LEVEL SECURITY;
ALTER TABLE invoice_payments FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON invoice_payments
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
