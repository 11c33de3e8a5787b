-- Time partitions, outbound webhook messages, step 2: the bound checked against every row,
-- under SHARE UPDATE EXCLUSIVE (messages go on being written and delivered).
ALTER TABLE webhook_messages VALIDATE CONSTRAINT webhook_messages_legacy_bound;
