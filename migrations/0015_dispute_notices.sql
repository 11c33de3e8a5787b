-- Disputes notify operators through the same notifier as SLO alerts (one row per
-- transition, sent once by slo.notify): a dispute's alert key is `dispute:{id}`, not an SLO,
-- so the notifications no longer reference slo_alerts. A dispute the policy restricts for
-- (deploy/dunning.toml [disputes] restrict) holds the tenant restricted until it closes.
ALTER TABLE slo_notifications DROP CONSTRAINT slo_notifications_alert_key_fkey;
ALTER TABLE disputes ADD COLUMN restricts boolean NOT NULL DEFAULT false;
