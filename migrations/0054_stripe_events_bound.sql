-- Time partitions, the Stripe inbox, step 1 (expand): every event so far, and every one stored
-- until the swap, was created (by Stripe: `stripe_created`) before the start of the month after
-- tomorrow. NOT VALID takes no scan; step 2 validates it without blocking the intake.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE stripe_events ADD CONSTRAINT stripe_events_legacy_bound CHECK (stripe_created < %L) NOT VALID',
                   date_trunc('month', now() + interval '1 day', 'UTC') + interval '1 month');
END $$;
