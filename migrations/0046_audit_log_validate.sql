-- Time partitions, expand step 2: the audit log's bound checked against every row. VALIDATE
-- takes SHARE UPDATE EXCLUSIVE, so writers and readers go on while it scans.
ALTER TABLE audit_log VALIDATE CONSTRAINT audit_log_legacy_bound;
