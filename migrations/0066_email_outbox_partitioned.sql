-- swap step: email_outbox keeps its name and columns (members from 0.6.0 on write and read it as before); the old heap, renamed, becomes its first partition
--
-- Time partitions, the email outbox, step 4: partitioned by month of its UUIDv7 id (the key
-- stays `id`). Nothing here scans or copies a row: the old heap is attached below the bound
-- 0063 declared and 0064 validated, and its indexes and foreign key are taken over as they
-- are. The dedup key's unique index goes (0065 built the lookup index that replaces it):
-- members from 0.6.0 on keep one email per key under an advisory lock. A DEFAULT partition
-- takes an id no month holds (one not made by Ballast) and the pending emails a retired month
-- keeps; the `email.prune` service deletes from it and from the first partition, which holds
-- everything up to two months past the upgrade.
SET LOCAL lock_timeout = '5s';
LOCK TABLE email_outbox IN ACCESS EXCLUSIVE MODE;

ALTER TABLE email_outbox DROP CONSTRAINT email_outbox_dedup_key_key;
ALTER TABLE email_outbox RENAME TO email_outbox_legacy;
ALTER TABLE email_outbox_legacy RENAME CONSTRAINT email_outbox_pkey TO email_outbox_legacy_pkey;
ALTER TABLE email_outbox_legacy RENAME CONSTRAINT email_outbox_tenant_id_fkey TO email_outbox_legacy_tenant_id_fkey;
ALTER INDEX email_outbox_tenant_id_idx RENAME TO email_outbox_legacy_tenant_id_idx;
ALTER INDEX email_outbox_pending_idx RENAME TO email_outbox_legacy_pending_idx;
ALTER INDEX email_outbox_dedup_key_idx RENAME TO email_outbox_legacy_dedup_key_idx;

CREATE TABLE email_outbox (
    id                  uuid NOT NULL,
    tenant_id           uuid NOT NULL,
    dedup_key           text NOT NULL,
    template            text NOT NULL,
    to_address          text NOT NULL,
    subject             text NOT NULL,
    body_text           text NOT NULL,
    body_html           text NOT NULL,
    message_id          text NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CONSTRAINT email_outbox_status_check CHECK (status IN ('pending', 'sent', 'dead')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    created_at          timestamptz NOT NULL DEFAULT now(),
    sent_at             timestamptz,
    send_lease_until    timestamptz,
    send_claimed_by     text,
    from_address        text,
    PRIMARY KEY (id),
    CONSTRAINT email_outbox_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) PARTITION BY RANGE (id);
CREATE INDEX email_outbox_tenant_id_idx ON email_outbox (tenant_id);
CREATE INDEX email_outbox_pending_idx ON email_outbox (created_at) WHERE status = 'pending';
CREATE INDEX email_outbox_dedup_key_idx ON email_outbox (dedup_key);

DO $$
DECLARE
    bound uuid;
BEGIN
    ALTER TABLE email_outbox ENABLE ROW LEVEL SECURITY;
    ALTER TABLE email_outbox FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON email_outbox
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
    SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::uuid INTO bound
    FROM pg_constraint WHERE conname = 'email_outbox_legacy_bound';
    EXECUTE format('ALTER TABLE email_outbox ATTACH PARTITION email_outbox_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    PERFORM ballast_partition_create('email_outbox', ballast_uuid_v7_time(bound), ballast_uuid_v7_time(bound) + interval '1 month');
    PERFORM ballast_partition_create('email_outbox', ballast_uuid_v7_time(bound) + interval '1 month', ballast_uuid_v7_time(bound) + interval '2 months');
    CREATE TABLE email_outbox_default PARTITION OF email_outbox DEFAULT;
    ALTER TABLE email_outbox_default ENABLE ROW LEVEL SECURITY;
    ALTER TABLE email_outbox_default FORCE ROW LEVEL SECURITY;
    CREATE POLICY tenant_isolation ON email_outbox_default
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
END $$;
