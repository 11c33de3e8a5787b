-- required stop: 0.6.0: a member before 0.6.0 writes an email with ON CONFLICT (dedup_key), a key no partitioned table can have (0066), so every email it wrote would fail
--
-- Time partitions, the email outbox, step 1 (expand). Its ids have been UUIDv7s from the
-- first release (RFC 9562: the first 48 bits are the Unix time in milliseconds), so the outbox
-- is partitioned by month of its id, as outbound deliveries are (0059-0062): the key stays
-- `id`, and the send's statements by id reach one partition. Members from 0.6.0 on keep an
-- email once per dedup key under an advisory lock, not by a unique index, which a table
-- partitioned by id cannot have on `dedup_key` alone.
--
-- Every email so far, and every one made until the swap (0066), has an id below the smallest
-- of the month after tomorrow's month. NOT VALID takes no scan (a moment's lock, never waited
-- for behind a long transaction); 0064 validates it without blocking the writers.
SET LOCAL lock_timeout = '5s';
DO $$
BEGIN
    EXECUTE format('ALTER TABLE email_outbox ADD CONSTRAINT email_outbox_legacy_bound CHECK (id < %L) NOT VALID',
        ballast_uuid_v7_floor(date_trunc('month', now() + interval '1 day', 'UTC') + interval '1 month'));
END $$;
