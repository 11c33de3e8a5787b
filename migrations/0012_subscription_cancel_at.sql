-- Flexible billing mode (the Stripe API default since 2025-09-30) cancels at a time of its own,
-- `cancel_at`, with `cancel_at_period_end = false`: the mirror keeps it, so entitlements expire
-- then and the drift job compares it. A customer's own default payment method
-- (`invoice_settings.default_payment_method`) is what Stripe charges when the subscription has
-- none: dunning reads either.
ALTER TABLE subscriptions ADD COLUMN cancel_at timestamptz;
ALTER TABLE customers ADD COLUMN default_payment_method text;
-- Stripe gave up on the invoice (voided it or marked it uncollectible after its retries): the
-- case closes as written off instead of retrying an invoice that can no longer be paid.
ALTER TABLE dunning_cases DROP CONSTRAINT dunning_cases_status_check;
ALTER TABLE dunning_cases ADD CONSTRAINT dunning_cases_status_check
    CHECK (status IN ('open', 'recovered', 'canceled', 'manual_review', 'written_off'));
