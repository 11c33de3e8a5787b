-- required stop: 0.4.0: a member before 0.4.0 gives deliveries random ids, which no month holds (one could land in a month not yet created and make its creation fail)
--
-- Time partitions, outbound webhook deliveries and their attempts, step 1 (expand). Their ids
-- are UUIDv7s since 0.4.0 (0058; RFC 9562: the first 48 bits are the Unix time in
-- milliseconds), so a delivery's id is its time and deliveries are partitioned by their id: the
-- key stays `id`, a statement by id reaches one partition, and a member from 0.4.0 on writes
-- nothing the partitioned table refuses. An attempt is partitioned by its delivery's id, so it
-- leaves with its delivery's month.
--
-- A partition's bounds are UUIDs for these tables and timestamps for the others; the partition
-- functions take and give times, and translate.

-- The smallest UUIDv7 of the millisecond `t`.
CREATE FUNCTION ballast_uuid_v7_floor(t timestamptz) RETURNS uuid
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
    SELECT (lpad(to_hex(floor(extract(epoch FROM t) * 1000)::bigint), 12, '0') || '00000000000000000000')::uuid
$$;

-- The millisecond a UUIDv7 was made in.
CREATE FUNCTION ballast_uuid_v7_time(u uuid) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT SET search_path = pg_catalog AS $$
    SELECT to_timestamp(('x' || lpad(left(replace(u::text, '-', ''), 12), 16, '0'))::bit(64)::bigint / 1000.0)
$$;

-- A range bound as pg_get_expr prints it: a time, or a UUIDv7 standing for its time.
CREATE FUNCTION ballast_partition_bound(bound text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE SET search_path = public, pg_catalog AS $$
    SELECT CASE WHEN bound ~ '^[0-9a-f]{8}-[0-9a-f]{4}-' THEN ballast_uuid_v7_time(bound::uuid) ELSE bound::timestamptz END
$$;

-- The months (not the DEFAULT partition), their bounds as times.
CREATE OR REPLACE FUNCTION ballast_partitions(parent text)
RETURNS TABLE (partition text, range_from timestamptz, range_to timestamptz)
LANGUAGE sql STABLE SET search_path = public, pg_catalog AS $$
    SELECT c.relname::text,
           ballast_partition_bound((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]),
           ballast_partition_bound((regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1])
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(format('public.%I', parent)) AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'
    ORDER BY 3
$$;

-- As in 0045, with the bounds in the partition key's type: a time, or for a UUID key the
-- smallest UUIDv7 of that time.
CREATE OR REPLACE FUNCTION ballast_partition_create(parent text, range_from timestamptz, range_to timestamptz)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_catalog AS $$
DECLARE
    part text := format('%s_p%s', parent, to_char(range_from AT TIME ZONE 'UTC', 'YYYYMMDD'));
    key_type regtype;
    lo text := range_from::text;
    hi text := range_to::text;
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relname = parent AND c.relkind = 'p') THEN
        RAISE EXCEPTION 'ballast_partition_create: % is not a partitioned table', parent;
    END IF;
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    SELECT a.atttypid::regtype INTO key_type
    FROM pg_partitioned_table p JOIN pg_attribute a ON a.attrelid = p.partrelid AND a.attnum = p.partattrs[0]
    WHERE p.partrelid = format('public.%I', parent)::regclass;
    IF key_type = 'uuid'::regtype THEN
        lo := ballast_uuid_v7_floor(range_from)::text;
        hi := ballast_uuid_v7_floor(range_to)::text;
    END IF;
    -- Creating a partition locks the parent for a moment: never queue behind a long transaction
    -- (and make every writer queue behind this); fail and try again next run instead.
    PERFORM set_config('lock_timeout', '2s', true);
    EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%L) TO (%L)', part, parent, lo, hi);
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', part);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON public.%I
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)$p$, part);
    RETURN part;
END $$;

-- Every delivery so far, and every one made until the swap (0062), has an id below the
-- smallest of the month after tomorrow's month; so has every attempt's delivery. NOT VALID
-- takes no scan; 0060 validates both without blocking the deliveries. A delivery made before
-- 0.4.0 has a random id, above that bound but for one in two hundred: refused here, before
-- anything is declared, with when it will be gone. The owner sees tenant rows only with row
-- security not forced, lifted for two index probes in this transaction. Both tables are locked
-- first, in the order the workers lock them (an attempt, then its delivery), so no worker
-- deadlocks with this; never waiting behind a long transaction.
SET LOCAL lock_timeout = '5s';
LOCK TABLE webhook_attempts, webhook_deliveries IN ACCESS EXCLUSIVE MODE;
DO $$
DECLARE
    bound uuid := ballast_uuid_v7_floor(date_trunc('month', now() + interval '1 day', 'UTC') + interval '1 month');
    random_ids boolean;
BEGIN
    ALTER TABLE webhook_deliveries NO FORCE ROW LEVEL SECURITY;
    ALTER TABLE webhook_attempts NO FORCE ROW LEVEL SECURITY;
    random_ids := EXISTS (SELECT 1 FROM webhook_deliveries WHERE id >= bound) OR EXISTS (SELECT 1 FROM webhook_attempts WHERE delivery_id >= bound);
    ALTER TABLE webhook_deliveries FORCE ROW LEVEL SECURITY;
    ALTER TABLE webhook_attempts FORCE ROW LEVEL SECURITY;
    IF random_ids THEN
        RAISE EXCEPTION 'outbound webhook deliveries made before release 0.4.0 (random ids, no time in them) are still kept'
            USING HINT = 'They leave BALLAST_DELIVERY_RETENTION_DAYS (30) after they finish (deliveries.prune, every minute); run ballast migrate again after that. Nothing was changed.';
    END IF;
    EXECUTE format('ALTER TABLE webhook_deliveries ADD CONSTRAINT webhook_deliveries_legacy_bound CHECK (id < %L) NOT VALID', bound);
    EXECUTE format('ALTER TABLE webhook_attempts ADD CONSTRAINT webhook_attempts_legacy_bound CHECK (delivery_id < %L) NOT VALID', bound);
END $$;
