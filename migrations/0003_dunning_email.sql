-- Dunning and email: a case per failed invoice, one row per action taken on it (the action
-- key makes each action happen once), and the transactional email outbox.

-- One case per invoice whose payment failed. Days are counted from `opened_at` (Stripe's
-- clock: the first invoice.payment_failed), so a late job run acts on the right day.
CREATE TABLE dunning_cases (
    id                  uuid PRIMARY KEY DEFAULT gen_random_uuid(),
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    invoice_id          text NOT NULL UNIQUE,
    customer_id         text NOT NULL,
    subscription_id     text,
    opened_at           timestamptz NOT NULL,
    status              text NOT NULL DEFAULT 'open'
                        CHECK (status IN ('open', 'recovered', 'canceled', 'manual_review')),
    -- Entitlements are restricted while an open case says so (policy day 14).
    restricted          boolean NOT NULL DEFAULT false,
    -- A decline that retrying cannot fix (stolen card, …): retries are skipped.
    hard_decline        boolean NOT NULL DEFAULT false,
    decline_code        text,
    closed_at           timestamptz,
    updated_at          timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX dunning_cases_tenant_id_idx ON dunning_cases (tenant_id);
CREATE INDEX dunning_cases_open_idx ON dunning_cases (opened_at) WHERE status = 'open';

-- Every action on a case, keyed (case, stage): a second run, or a second member, finds the
-- row and does nothing.
CREATE TABLE dunning_actions (
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    case_id             uuid NOT NULL REFERENCES dunning_cases (id),
    stage               text NOT NULL,
    action              text NOT NULL,
    outcome             text NOT NULL,
    detail              jsonb NOT NULL DEFAULT '{}',
    performed_at        timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (case_id, stage)
);
CREATE INDEX dunning_actions_tenant_id_idx ON dunning_actions (tenant_id);

-- Emails to send, written in the transaction that decided them. The dedup key makes an email
-- exist once; its Message-ID is derived from the key.
CREATE TABLE email_outbox (
    id                  uuid PRIMARY KEY,
    tenant_id           uuid NOT NULL REFERENCES tenants (id),
    dedup_key           text NOT NULL UNIQUE,
    template            text NOT NULL,
    to_address          text NOT NULL,
    subject             text NOT NULL,
    body_text           text NOT NULL,
    body_html           text NOT NULL,
    message_id          text NOT NULL,
    status              text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz
);
CREATE INDEX email_outbox_tenant_id_idx ON email_outbox (tenant_id);
CREATE INDEX email_outbox_pending_idx ON email_outbox (created_at) WHERE status = 'pending';

DO $$
DECLARE
    t text;
BEGIN
    FOREACH t IN ARRAY ARRAY['dunning_cases', 'dunning_actions', 'email_outbox']
    LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
    END LOOP;
END $$;
