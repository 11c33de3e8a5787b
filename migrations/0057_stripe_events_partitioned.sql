-- swap step: stripe_events keeps its name and columns (releases from 0.2.0 on store with ON CONFLICT DO NOTHING and read by id); the old heap, renamed, becomes its first partition
-- required stop: 0.2.0: a member before 0.2.0 stores Stripe events with ON CONFLICT (id), a key the partitioned inbox cannot have, and its intake would answer 5xx
--
-- Time partitions, the Stripe inbox, step 4: partitioned by month of `stripe_created`, which an
-- event's id fixes, so the key (id, stripe_created) is as unique as the id. Nothing here scans
-- or copies a row: the old heap is attached below the bound steps 1 and 2 declared and
-- validated, its key is the index step 3 built concurrently, and its other indexes and foreign
-- key are taken over as they are. A DEFAULT partition takes what no month holds: events
-- created before the oldest month once the first partition is retired, and the rows still to
-- handle that a retirement moves out of the month it drops. The columns keep the old table's
-- order, so a retirement moves rows with `SELECT *`.
SET LOCAL lock_timeout = '5s';

ALTER TABLE stripe_events RENAME TO stripe_events_legacy;
ALTER TABLE stripe_events_legacy RENAME CONSTRAINT stripe_events_tenant_id_fkey TO stripe_events_legacy_tenant_id_fkey;
ALTER TABLE stripe_events_legacy DROP CONSTRAINT stripe_events_pkey;
ALTER TABLE stripe_events_legacy ADD CONSTRAINT stripe_events_legacy_pkey PRIMARY KEY USING INDEX stripe_events_id_created_idx;

CREATE TABLE stripe_events (
    id                  text NOT NULL,
    type                text NOT NULL,
    tenant_id           uuid,
    livemode            boolean NOT NULL DEFAULT false,
    api_version         text,
    stripe_created      timestamptz NOT NULL,
    payload             jsonb NOT NULL,
    status              text NOT NULL DEFAULT 'received'
                        CONSTRAINT stripe_events_status_check
                        CHECK (status IN ('received', 'queued', 'processed', 'ignored', 'unmatched', 'failed')),
    attempts            integer NOT NULL DEFAULT 0,
    last_error          text,
    received_at         timestamptz NOT NULL DEFAULT now(),
    queued_at           timestamptz,
    processed_at        timestamptz,
    customer_id         text,
    object_id           text,
    PRIMARY KEY (id, stripe_created),
    CONSTRAINT stripe_events_tenant_id_fkey FOREIGN KEY (tenant_id) REFERENCES tenants (id)
) PARTITION BY RANGE (stripe_created);
CREATE INDEX stripe_events_tenant_idx ON stripe_events (tenant_id);
CREATE INDEX stripe_events_received_idx ON stripe_events (received_at) WHERE status = 'received';
CREATE INDEX stripe_events_parked_idx ON stripe_events (customer_id) WHERE status = 'unmatched';
CREATE INDEX stripe_events_settled_at_idx ON stripe_events (received_at) WHERE status IN ('processed', 'ignored');
CREATE INDEX stripe_events_waiting_by_tenant_idx ON stripe_events (tenant_id, stripe_created, id) WHERE status IN ('received', 'queued');
ALTER TABLE stripe_events ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_events FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stripe_events
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);

-- The months, not the DEFAULT partition (it has no bounds and is never retired).
CREATE OR REPLACE FUNCTION ballast_partitions(parent text)
RETURNS TABLE (partition text, range_from timestamptz, range_to timestamptz)
LANGUAGE sql STABLE SET search_path = public, pg_catalog AS $$
    SELECT c.relname::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(format('public.%I', parent)) AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    ORDER BY 3
$$;

DO $$
DECLARE
    bound timestamptz;
BEGIN
    SELECT (regexp_match(pg_get_constraintdef(oid), '''([^'']+)'''))[1]::timestamptz INTO bound
    FROM pg_constraint WHERE conname = 'stripe_events_legacy_bound';
    EXECUTE format('ALTER TABLE stripe_events ATTACH PARTITION stripe_events_legacy FOR VALUES FROM (MINVALUE) TO (%L)', bound);
    PERFORM ballast_partition_create('stripe_events', bound, bound + interval '1 month');
    PERFORM ballast_partition_create('stripe_events', bound + interval '1 month', bound + interval '2 months');
END $$;
CREATE TABLE stripe_events_default PARTITION OF stripe_events DEFAULT;
ALTER TABLE stripe_events_default ENABLE ROW LEVEL SECURITY;
ALTER TABLE stripe_events_default FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON stripe_events_default
    USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
    WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid);
