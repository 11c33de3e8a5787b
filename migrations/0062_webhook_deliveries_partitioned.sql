-- swap step: webhook_deliveries and webhook_attempts keep their names and columns (members from 0.4.0 on write and read them as before); the old heaps, renamed, become their first partitions
--
-- Time partitions, outbound webhook deliveries, step 4: deliveries partitioned by month of
-- their UUIDv7 id (the key stays `id`), attempts by their delivery's (the key becomes
-- (delivery_id, id), the index 0061 built), so a month of deliveries and its attempts leave
-- together. Nothing here scans or copies a row: the old heaps are attached below the bounds
-- 0059 declared and 0060 validated, and their indexes and foreign keys are taken over as they
-- are. The attempts' foreign key to their delivery goes: the two retire by the same month, and
-- a key across two partitioned tables would make every detach of a delivery month check the
-- attempts. A DEFAULT partition takes an id no month holds (one not made by Ballast); the
-- `deliveries.prune` service deletes from it and from the first partition, which hold
-- everything up to two months past the upgrade.
SET LOCAL lock_timeout = '5s';
-- Every table this changes or adds a foreign key to, locked first in the order the intake and
-- the workers lock them (a message, then its deliveries; an attempt, then its delivery, then
-- the endpoint's health), so none of them deadlocks with the swap.
LOCK TABLE webhook_messages IN SHARE ROW EXCLUSIVE MODE;
LOCK TABLE webhook_attempts, webhook_deliveries IN ACCESS EXCLUSIVE MODE;
LOCK TABLE webhook_endpoints IN SHARE ROW EXCLUSIVE MODE;

ALTER TABLE webhook_attempts DROP CONSTRAINT webhook_attempts_delivery_id_fkey;

ALTER TABLE webhook_deliveries RENAME TO webhook_deliveries_legacy;
ALTER TABLE webhook_deliveries_legacy RENAME CONSTRAINT webhook_deliveries_pkey TO webhook_deliveries_legacy_pkey;
ALTER TABLE webhook_deliveries_legacy RENAME CONSTRAINT webhook_deliveries_tenant_id_fkey TO webhook_deliveries_legacy_tenant_id_fkey;
ALTER TABLE webhook_deliveries_legacy RENAME CONSTRAINT webhook_deliveries_message_id_fkey TO webhook_deliveries_legacy_message_id_fkey;
ALTER TABLE webhook_deliveries_legacy RENAME CONSTRAINT webhook_deliveries_endpoint_id_fkey TO webhook_deliveries_legacy_endpoint_id_fkey;
ALTER INDEX webhook_deliveries_tenant_id_idx RENAME TO webhook_deliveries_legacy_tenant_id_idx;
ALTER INDEX webhook_deliveries_endpoint_idx RENAME TO webhook_deliveries_legacy_endpoint_idx;
ALTER INDEX webhook_deliveries_message_idx RENAME TO webhook_deliveries_legacy_message_idx;
ALTER INDEX webhook_deliveries_pending_idx RENAME TO webhook_deliveries_legacy_pending_idx;
ALTER INDEX webhook_deliveries_finished_idx RENAME TO webhook_deliveries_legacy_finished_idx;
ALTER INDEX webhook_deliveries_in_flight_idx RENAME TO webhook_deliveries_legacy_in_flight_idx;

CREATE TABLE webhook_deliveries (
    id                  uuid NOT NULL,
    tenant_id           uuid NOT NULL,
    message_id          uuid NOT NULL,
    endpoint_id         uuid NOT NULL,
    status              text NOT NULL DEFAULT 'pending'
                        CONSTRAINT webhook_deliveries_status_check
                        CHECK (status IN ('pending', 'delivered', 'failed', 'skipped')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    next_attempt_at     timestamptz,
    created_at          timestamptz NOT NULL DEFAULT now(),
    finished_at         timestamptz,
    PRIMARY KEY (id),
    CONSTRAINT webhook_deliveries_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id),
    CONSTRAINT webhook_deliveries_message_id_fkey FOREIGN KEY (message_id) REFERENCES webhook_messages (id),
    CONSTRAINT webhook_deliveries_endpoint_id_fkey FOREIGN KEY (endpoint_id) REFERENCES webhook_endpoints (id)
) PARTITION BY RANGE (id);
CREATE INDEX webhook_deliveries_tenant_id_idx ON webhook_deliveries (tenant_id);
CREATE INDEX webhook_deliveries_endpoint_idx ON webhook_deliveries (endpoint_id, created_at DESC);
CREATE INDEX webhook_deliveries_message_idx ON webhook_deliveries (message_id);
CREATE INDEX webhook_deliveries_pending_idx ON webhook_deliveries (created_at) WHERE status = 'pending';
CREATE INDEX webhook_deliveries_finished_idx ON webhook_deliveries (finished_at) WHERE finished_at IS NOT NULL;
CREATE INDEX webhook_deliveries_in_flight_idx ON webhook_deliveries (tenant_id) WHERE status = 'pending';

ALTER TABLE webhook_attempts RENAME TO webhook_attempts_legacy;
ALTER TABLE webhook_attempts_legacy RENAME CONSTRAINT webhook_attempts_tenant_id_fkey TO webhook_attempts_legacy_tenant_id_fkey;
ALTER TABLE webhook_attempts_legacy DROP CONSTRAINT webhook_attempts_pkey;
ALTER TABLE webhook_attempts_legacy ADD CONSTRAINT webhook_attempts_legacy_pkey PRIMARY KEY USING INDEX webhook_attempts_delivery_id_id_idx;
ALTER INDEX webhook_attempts_delivery_idx RENAME TO webhook_attempts_legacy_delivery_idx;
ALTER INDEX webhook_attempts_tenant_id_idx RENAME TO webhook_attempts_legacy_tenant_id_idx;

CREATE TABLE webhook_attempts (
    id                  uuid NOT NULL,
    tenant_id           uuid NOT NULL,
    delivery_id         uuid NOT NULL,
    attempt             integer NOT NULL,
    attempted_at        timestamptz NOT NULL,
    duration_ms         integer NOT NULL,
    status_code         integer,
    response_body       text,
    error               text,
    PRIMARY KEY (delivery_id, id),
    CONSTRAINT webhook_attempts_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) PARTITION BY RANGE (delivery_id);
CREATE INDEX webhook_attempts_delivery_idx ON webhook_attempts (delivery_id, attempt);
CREATE INDEX webhook_attempts_tenant_id_idx ON webhook_attempts (tenant_id);

DO $$
DECLARE
    t text;
    bound uuid;
BEGIN
    FOREACH t IN ARRAY ARRAY['webhook_deliveries', 'webhook_attempts'] LOOP
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t);
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t);
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)$p$, t);
        SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::uuid INTO bound
        FROM pg_constraint WHERE conname = t || '_legacy_bound';
        EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (MINVALUE) TO (%L)', t, t || '_legacy', bound);
        PERFORM ballast_partition_create(t, ballast_uuid_v7_time(bound), ballast_uuid_v7_time(bound) + interval '1 month');
        PERFORM ballast_partition_create(t, ballast_uuid_v7_time(bound) + interval '1 month', ballast_uuid_v7_time(bound) + interval '2 months');
        EXECUTE format('CREATE TABLE %I PARTITION OF %I DEFAULT', t || '_default', t);
        EXECUTE format('ALTER TABLE %I ENABLE ROW LEVEL SECURITY', t || '_default');
        EXECUTE format('ALTER TABLE %I FORCE ROW LEVEL SECURITY', t || '_default');
        EXECUTE format($p$CREATE POLICY tenant_isolation ON %I
            USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
            WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)$p$, t || '_default');
    END LOOP;
END $$;
