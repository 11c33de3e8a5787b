-- Backups and rehearsals from pgBackRest beside pg_dump's (issue 38): which source a run
-- used, so the backup alert holds each to its own age. Expand-only: a column with a default.
ALTER TABLE backup_runs ADD COLUMN source text NOT NULL DEFAULT 'dump' CHECK (source IN ('dump', 'pgbackrest'));
DROP INDEX backup_runs_kind_finished_idx;
CREATE INDEX backup_runs_kind_source_finished_idx ON backup_runs (kind, source, finished_at DESC);
