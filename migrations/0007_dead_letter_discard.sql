-- Dead letters an operator decided not to run again (`ballast jobs discard`): kept for the
-- record, out of the open list.
ALTER TABLE job_dead_letters ADD COLUMN discarded_at timestamptz;
ALTER TABLE job_dead_letters ADD COLUMN discarded_by text;
DROP INDEX job_dead_letters_open_idx;
CREATE INDEX job_dead_letters_open_idx ON job_dead_letters (failed_at) WHERE retried_at IS NULL AND discarded_at IS NULL;
