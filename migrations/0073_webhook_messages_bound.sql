-- required stop: 0.10.0: a member before 0.10.0 writes a message with ON CONFLICT (tenant_id, idempotency_key), a key no partitioned table can have (0076), so every message it wrote would fail
--
-- Time partitions, outbound webhook messages, step 1 (expand). A message's id has been a
-- UUIDv7 from the first release, so messages are partitioned by month of their id, as their
-- deliveries are (0059-0062): the key stays `id`. Members from 0.10.0 on keep one message per
-- tenant and idempotency key under a transaction lock on the key, not by the unique index,
-- which a table partitioned by id cannot have on (tenant_id, idempotency_key).
--
-- Every message so far, and every one made until the swap (0076), has an id below the
-- smallest of the month after tomorrow's month. NOT VALID takes no scan (a moment's lock);
-- 0074 validates it without blocking the writers.
SET LOCAL lock_timeout = '5s';
DO $$
BEGIN
    EXECUTE format('ALTER TABLE webhook_messages ADD CONSTRAINT webhook_messages_legacy_bound CHECK (id < %L) NOT VALID',
        ballast_uuid_v7_floor(date_trunc('month', now() + interval '1 day', 'UTC') + interval '1 month'));
END $$;
