-- Operators (issue 39): the people who run Ballast — support, on-call, admins — each with a
-- role (viewer reads, operator acts, admin also manages operators) and a token stored only as
-- its SHA-256 (`bo_{prefix}_{secret}`, distinct from API keys' `bk_`). Every admin action
-- names its operator in the audit log. Global: no tenant data; the app role has no access.
CREATE TABLE operators (
    id                  uuid PRIMARY KEY,
    name                text NOT NULL UNIQUE CHECK (name ~ '^[a-z0-9][a-z0-9._@-]{0,63}$'),
    role                text NOT NULL CHECK (role IN ('viewer', 'operator', 'admin')),
    token_prefix        text NOT NULL UNIQUE,
    token_hash          bytea NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    created_by          text NOT NULL,
    rotated_at          timestamptz,
    disabled_at         timestamptz
);
REVOKE ALL ON operators FROM ballast_app;
