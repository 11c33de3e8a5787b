-- no-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS stripe_events_id_created_idx ON stripe_events (id, stripe_created);
