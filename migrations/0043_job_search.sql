-- The console's job search (issue 40): newest first by time with a keyset cursor, over tracked
-- jobs and dead letters, without scanning either table.
CREATE INDEX job_status_created_idx ON job_status (created_at DESC, id DESC);
CREATE INDEX job_dead_letters_failed_idx ON job_dead_letters (failed_at DESC, job_id DESC);

-- A disabled operator's sessions are found by their operator (every foreign key is indexed).
CREATE INDEX console_sessions_operator_idx ON console_sessions (operator_id);
