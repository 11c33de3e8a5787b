-- Operator console sessions (issue 40): a signed-in operator's browser session, its cookie
-- (`bc_{prefix}_{secret}`) stored only as its hash, with the CSRF token every form of the
-- session carries. Sessions expire; signing out ends one. Global: no tenant data; the app
-- role has no access.
CREATE TABLE console_sessions (
    id                  uuid PRIMARY KEY,
    operator_id         uuid NOT NULL REFERENCES operators (id),
    token_prefix        text NOT NULL UNIQUE,
    token_hash          bytea NOT NULL,
    csrf                text NOT NULL,
    created_at          timestamptz NOT NULL DEFAULT now(),
    expires_at          timestamptz NOT NULL,
    ended_at            timestamptz
);
CREATE INDEX console_sessions_expires_idx ON console_sessions (expires_at);
REVOKE ALL ON console_sessions FROM ballast_app;
