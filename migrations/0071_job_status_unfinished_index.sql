-- no-transaction
-- Time partitions, job statuses, step 4: the statuses of jobs not finished, which a month's
-- retirement keeps: read through this index, not by scanning the month. Built without blocking
-- writers so the swap takes it over as it is.
CREATE INDEX CONCURRENTLY IF NOT EXISTS job_status_unfinished_idx ON job_status (id_at) WHERE finished_at IS NULL;
