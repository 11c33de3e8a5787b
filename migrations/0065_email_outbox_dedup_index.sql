-- no-transaction
-- Time partitions, the email outbox, step 3: the dedup key's lookup index the partitioned
-- outbox has instead of its unique one (one per month), built without blocking writers so the
-- swap attaches it as it is.
CREATE INDEX CONCURRENTLY IF NOT EXISTS email_outbox_dedup_key_idx ON email_outbox (dedup_key);
