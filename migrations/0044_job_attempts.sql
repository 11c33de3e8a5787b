-- A tracked job's attempts (issue 40's job page): each attempt's start, duration, error and
-- trace id, appended by the update each attempt's end writes anyway.
ALTER TABLE job_status ADD COLUMN attempt_log jsonb NOT NULL DEFAULT '[]';
