-- Time partitions (issue 41), expand step 1: what every partitioned table shares, and the audit
-- log's promise that every row it holds so far is older than one bound.
--
-- The fleet's system role creates and retires partitions (the `partitions` maintenance
-- service); only a table's owner may, so it does so through these SECURITY DEFINER functions of
-- the owner role, which can touch nothing but partitions of partitioned tables in this schema.
-- The system role can delete every row of those tables already: the functions give it no
-- reach it did not have, only a way to remove rows without bloat.

-- Each retirement, from detach to drop: a member that dies between the two leaves a row
-- without `dropped_at`, and the next run finishes it (archives first when archiving is on).
-- Names no tenant: partitions and counts only.
CREATE TABLE partition_retirements (
    id                  bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    partition           text NOT NULL,
    parent              text NOT NULL,
    -- NULL: the partition had no lower bound (a table's first, converted partition).
    range_from          timestamptz,
    range_to            timestamptz NOT NULL,
    rows                bigint NOT NULL,
    detached_at         timestamptz NOT NULL DEFAULT now(),
    archive_path        text,
    archive_sha256      text,
    archived_at         timestamptz,
    dropped_at          timestamptz
);
CREATE UNIQUE INDEX partition_retirements_open_idx ON partition_retirements (partition) WHERE dropped_at IS NULL;
REVOKE ALL ON partition_retirements FROM ballast_app;

-- A partitioned table's partitions and their bounds (NULL from: MINVALUE), oldest first.
CREATE FUNCTION ballast_partitions(parent text)
RETURNS TABLE (partition text, range_from timestamptz, range_to timestamptz)
LANGUAGE sql STABLE SET search_path = public, pg_catalog AS $$
    SELECT c.relname::text,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'FROM \(''([^'']+)''\)'))[1]::timestamptz,
           (regexp_match(pg_get_expr(c.relpartbound, c.oid), 'TO \(''([^'']+)''\)'))[1]::timestamptz
    FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE i.inhparent = to_regclass(format('public.%I', parent))
    ORDER BY 3
$$;

-- Creates the partition of `parent` for [range_from, range_to) with the tenant policy every
-- tenant table has (reads through the parent are held by the parent's; this one holds reads of
-- the partition by name). Returns its name, or NULL when it exists already.
CREATE FUNCTION ballast_partition_create(parent text, range_from timestamptz, range_to timestamptz)
RETURNS text LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_catalog AS $$
DECLARE
    part text := format('%s_p%s', parent, to_char(range_from AT TIME ZONE 'UTC', 'YYYYMMDD'));
BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                   WHERE n.nspname = 'public' AND c.relname = parent AND c.relkind = 'p') THEN
        RAISE EXCEPTION 'ballast_partition_create: % is not a partitioned table', parent;
    END IF;
    IF to_regclass(format('public.%I', part)) IS NOT NULL THEN
        RETURN NULL;
    END IF;
    -- Creating a partition locks the parent for a moment: never queue behind a long transaction
    -- (and make every writer queue behind this); fail and try again next run instead.
    PERFORM set_config('lock_timeout', '2s', true);
    EXECUTE format('CREATE TABLE public.%I PARTITION OF public.%I FOR VALUES FROM (%L) TO (%L)', part, parent, range_from, range_to);
    EXECUTE format('ALTER TABLE public.%I ENABLE ROW LEVEL SECURITY', part);
    EXECUTE format('ALTER TABLE public.%I FORCE ROW LEVEL SECURITY', part);
    EXECUTE format($p$CREATE POLICY tenant_isolation ON public.%I
        USING (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)
        WITH CHECK (tenant_id = NULLIF(current_setting('app.tenant_id', true), '')::uuid)$p$, part);
    RETURN part;
END $$;

-- Detaches one partition of `parent` and records the retirement; its rows stay in the detached
-- table until ballast_partition_drop. `counted` is the caller's count, read before.
CREATE FUNCTION ballast_partition_detach(parent text, part text, counted bigint)
RETURNS bigint LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_catalog AS $$
DECLARE
    bounds record;
    retirement bigint;
BEGIN
    SELECT * INTO bounds FROM ballast_partitions(parent) p WHERE p.partition = part;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ballast_partition_detach: % is not a partition of %', part, parent;
    END IF;
    PERFORM set_config('lock_timeout', '2s', true);
    EXECUTE format('ALTER TABLE public.%I DETACH PARTITION public.%I', parent, part);
    INSERT INTO partition_retirements (partition, parent, range_from, range_to, rows)
    VALUES (part, parent, bounds.range_from, bounds.range_to, counted)
    RETURNING id INTO retirement;
    RETURN retirement;
END $$;

-- Drops a partition that ballast_partition_detach detached (and nothing else).
CREATE FUNCTION ballast_partition_drop(retirement bigint)
RETURNS void LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_catalog AS $$
DECLARE
    part text;
BEGIN
    SELECT r.partition INTO part FROM partition_retirements r WHERE r.id = retirement AND r.dropped_at IS NULL;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'ballast_partition_drop: retirement % is not open', retirement;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_inherits WHERE inhrelid = to_regclass(format('public.%I', part))) THEN
        RAISE EXCEPTION 'ballast_partition_drop: % is attached', part;
    END IF;
    EXECUTE format('DROP TABLE IF EXISTS public.%I', part);
    UPDATE partition_retirements SET dropped_at = now() WHERE id = retirement;
END $$;

REVOKE ALL ON FUNCTION ballast_partition_create(text, timestamptz, timestamptz) FROM PUBLIC;
REVOKE ALL ON FUNCTION ballast_partition_detach(text, text, bigint) FROM PUBLIC;
REVOKE ALL ON FUNCTION ballast_partition_drop(bigint) FROM PUBLIC;
GRANT EXECUTE ON FUNCTION ballast_partition_create(text, timestamptz, timestamptz) TO ballast_system;
GRANT EXECUTE ON FUNCTION ballast_partition_detach(text, text, bigint) TO ballast_system;
GRANT EXECUTE ON FUNCTION ballast_partition_drop(bigint) TO ballast_system;

-- The audit log's conversion, expand: every row so far, and every row written until the swap
-- (0048) a moment later, is older than the start of the month after tomorrow. NOT VALID takes
-- no scan; 0046 validates it without blocking writers, and 0048 attaches the old heap as the
-- partition below that bound on the strength of it, without a scan under its lock.
DO $$
BEGIN
    EXECUTE format('ALTER TABLE audit_log ADD CONSTRAINT audit_log_legacy_bound CHECK (at < %L) NOT VALID',
                   date_trunc('month', now() + interval '1 day', 'UTC') + interval '1 month');
END $$;
