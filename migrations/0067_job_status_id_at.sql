-- Time partitions, job statuses, step 0 (expand, release 0.8.0). A job's status is found by its
-- id alone, and every id Ballast makes ends in a UUIDv7 (a bare one from POST /v1/jobs,
-- `email_<uuid>`, `whd_<uuid without hyphens>`), so the time an id carries is a partition key
-- each statement can compute from the id it has. PostgreSQL cannot partition by an expression
-- that a key must include, nor by a generated column, so the time is a column the writers fill
-- from this function (0.8.0 on), and the backfills service for rows from before.
--
-- The millisecond a job id's trailing UUIDv7 was made in; -infinity for an id without one (no
-- id Ballast makes), so every id has one time and the same on every call.
CREATE FUNCTION ballast_job_id_time(id text) RETURNS timestamptz
LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE SET search_path = public, pg_catalog AS $$
    SELECT CASE WHEN h ~ '^[0-9a-f]{12}7[0-9a-f]{19}$' THEN ballast_uuid_v7_time(h::uuid) ELSE '-infinity'::timestamptz END
    FROM (SELECT right(replace(lower(id), '-', ''), 32) AS h) s
$$;

ALTER TABLE job_status ADD COLUMN id_at timestamptz;
