-- swap step: webhook_messages keeps its name and columns (members from 0.10.0 on write and read it as before); the old heap, renamed, becomes its first partition
--
-- Time partitions, outbound webhook messages, step 4: partitioned by month of their UUIDv7 id
-- (the key stays `id`). Nothing here scans or copies a row: the old heap is attached below the
-- bound 0073 declared and 0074 validated, and its indexes and foreign key are taken over as
-- they are. The unique key on (tenant_id, idempotency_key) goes (0075 built the lookup index
-- that replaces it). The deliveries' foreign key to their message goes too, as the attempts'
-- to their delivery did (0062): a key into a partitioned table would make every detach of a
-- message month check the deliveries; a message month retires after its deliveries' month
-- and keeps the messages deliveries still name. A DEFAULT partition takes an id no month
-- holds and the messages a retired month keeps; `deliveries.prune` deletes from it and from
-- the first partition, which holds everything up to two months past the upgrade.
SET LOCAL lock_timeout = '5s';
-- In the order the intake locks them: a message, then its deliveries.
LOCK TABLE webhook_messages IN ACCESS EXCLUSIVE MODE;
LOCK TABLE webhook_deliveries IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE webhook_deliveries DROP CONSTRAINT webhook_deliveries_message_id_fkey;
-- (The first partition's own key, where attaching it did not merge it with the parent's.)
ALTER TABLE webhook_deliveries_legacy DROP CONSTRAINT IF EXISTS webhook_deliveries_legacy_message_id_fkey;

ALTER TABLE webhook_messages DROP CONSTRAINT webhook_messages_tenant_id_idempotency_key_key;
ALTER TABLE webhook_messages RENAME TO webhook_messages_legacy;
ALTER TABLE webhook_messages_legacy RENAME CONSTRAINT webhook_messages_pkey TO webhook_messages_legacy_pkey;
ALTER TABLE webhook_messages_legacy RENAME CONSTRAINT webhook_messages_tenant_id_fkey TO webhook_messages_legacy_tenant_id_fkey;
ALTER INDEX webhook_messages_idempotency_key_idx RENAME TO webhook_messages_legacy_idempotency_key_idx;

CREATE TABLE webhook_messages (
    id                  uuid NOT NULL,
    tenant_id           uuid NOT NULL,
    event_type          text NOT NULL,
    body                text NOT NULL,
    idempotency_key     text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (id),
    CONSTRAINT webhook_messages_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) PARTITION BY RANGE (id);
CREATE INDEX webhook_messages_idempotency_key_idx ON webhook_messages (tenant_id, idempotency_key) WHERE idempotency_key IS NOT NULL;

DO $$
DECLARE
    bound uuid;
BEGIN
    ALTER TABLE webhook_messages ENABLE ROW LEVEL SECURITY;
    ALTER TABLE webhook_messages FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON webhook_messages
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
    SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::uuid INTO bound
    FROM pg_constraint WHERE conname = 'webhook_messages_legacy_bound';
    EXECUTE format('ALTER TABLE webhook_messages ATTACH PARTITION webhook_messages_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    PERFORM ballast_partition_create('webhook_messages', ballast_uuid_v7_time(bound), ballast_uuid_v7_time(bound) + interval '1 month');
    PERFORM ballast_partition_create('webhook_messages', ballast_uuid_v7_time(bound) + interval '1 month', ballast_uuid_v7_time(bound) + interval '2 months');
    CREATE TABLE webhook_messages_default PARTITION OF webhook_messages DEFAULT;
    ALTER TABLE webhook_messages_default ENABLE ROW LEVEL SECURITY;
    ALTER TABLE webhook_messages_default FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON webhook_messages_default
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
END $$;
