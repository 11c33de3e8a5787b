-- Time partitions, the email outbox, step 2: the bound checked against every row, under SHARE
-- UPDATE EXCLUSIVE (emails go on being written and sent).
ALTER TABLE email_outbox VALIDATE CONSTRAINT email_outbox_legacy_bound;
