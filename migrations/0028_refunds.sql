-- Refunds as their own objects (refund.created / updated / failed, issue 37): a charge may be
-- refunded in parts, and a refund can fail after it was created. Stripe's latest state wins;
-- at the same second a settled status beats `pending`.
CREATE TABLE refunds (
    id                  text PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    charge_id           text,
    amount              bigint NOT NULL,
    currency            text NOT NULL,
    status              text NOT NULL,
    reason              text,
    failure_reason      text,
    stripe_updated_at   timestamptz NOT NULL,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX refunds_tenant_id_idx ON refunds (tenant_id);
CREATE INDEX refunds_charge_id_idx ON refunds (charge_id);

ALTER TABLE refunds ENABLE ROW LEVEL SECURITY;
ALTER TABLE refunds FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON refunds
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
