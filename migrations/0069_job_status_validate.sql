-- Time partitions, job statuses, step 2: the bound checked against every row, under SHARE
-- UPDATE EXCLUSIVE (statuses go on being written and read). A status from before 0.8.0 whose
-- time the backfills service has not filled yet fails it: refused with what to do, and
-- nothing changed (0068's bound, NOT VALID, holds every row written since).
DO $$
BEGIN
    ALTER TABLE job_status VALIDATE CONSTRAINT job_status_legacy_bound;
EXCEPTION WHEN check_violation THEN
    RAISE EXCEPTION 'job statuses written before release 0.8.0 are still without the time their id carries (id_at)'
        USING HINT = 'The backfills maintenance service fills them, 1,000 a batch every minute (`ballast maintenance` shows job_status_times); run ballast migrate again once it reports none. Nothing was changed.';
END $$;
