-- no-transaction
-- Time partitions, job statuses, step 3: the partitioned key (id, id_at), built without
-- blocking writers so the swap takes it over as the first partition's key.
CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS job_status_id_id_at_idx ON job_status (id, id_at);
