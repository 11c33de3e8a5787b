-- no-transaction
-- Time partitions, outbound webhook messages, step 3: the idempotency key's lookup index the
-- partitioned table has instead of its unique one (one per month; only messages that carry a
-- key), built without blocking writers so the swap attaches it as it is.
CREATE INDEX CONCURRENTLY IF NOT EXISTS webhook_messages_idempotency_key_idx ON webhook_messages (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;
