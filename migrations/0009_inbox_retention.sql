-- The sweep deletes processed and ignored inbox rows past the retention
-- (BALLAST_INBOX_RETENTION_SECS, 30 days): this index finds them without scanning the inbox.
CREATE INDEX stripe_events_settled_idx ON stripe_events (received_at) WHERE status IN ('processed', 'ignored');
