-- required stop: 0.8.0: a member before 0.8.0 writes a job's status without the time its id carries (id_at), the key the partitioned statuses are routed and found by (0072)
--
-- Time partitions, job statuses, step 1 (expand). Statuses are partitioned by month of the
-- time their id carries (`id_at`, 0067): every statement that has an id computes it, so a
-- worker's update and a tenant's read reach one partition. Every status written from 0.8.0
-- on has its time, and the backfills service fills the older ones; 0069 refuses, changing
-- nothing, while one is still without.
--
-- Every status so far, and every one written until the swap (0072), has a time below the
-- month after tomorrow's month. NOT VALID takes no scan (a moment's lock, never waited for
-- behind a long transaction); 0069 validates it without blocking the writers.
SET LOCAL lock_timeout = '5s';
DO $$
BEGIN
    EXECUTE format('ALTER TABLE job_status ADD CONSTRAINT job_status_legacy_bound CHECK (id_at IS NOT NULL AND id_at < %L) NOT VALID',
        date_trunc('month', now() + interval '1 day', 'UTC') + interval '1 month');
END $$;
