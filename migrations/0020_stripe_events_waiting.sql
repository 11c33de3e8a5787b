-- A tenant's Stripe events waiting to be applied, oldest first: a `stripe.event` job claims
-- them with its own (one transaction, one entitlements recompute, one commit for a backlog).
-- Partial, so it holds only the waiting rows, not the retained processed ones.
CREATE INDEX stripe_events_waiting_idx ON stripe_events (tenant_id, stripe_created, id) WHERE status IN ('received', 'queued');
