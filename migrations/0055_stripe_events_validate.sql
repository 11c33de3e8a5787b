-- Time partitions, the Stripe inbox, step 2: the bound checked against every row, under SHARE
-- UPDATE EXCLUSIVE (the intake and the workers go on).
ALTER TABLE stripe_events VALIDATE CONSTRAINT stripe_events_legacy_bound;
