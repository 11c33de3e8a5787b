-- no-transaction
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS webhook_attempts_delivery_id_id_idx ON webhook_attempts (delivery_id, id);
