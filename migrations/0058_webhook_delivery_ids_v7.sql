-- Outbound webhook deliveries get UUIDv7 ids (RFC 9562: the first 48 bits are the Unix time in
-- milliseconds, then version 7, then random bits), as their messages and attempts already do:
-- a delivery's id is then its time, which lets a later release (0.5.0) partition deliveries by
-- month of their id. PostgreSQL 15 has no uuidv7(); this is gen_random_uuid()'s 122 random
-- bits with the first 48 replaced by the time and the version nibble set to 7.
CREATE FUNCTION ballast_uuid_v7() RETURNS uuid
LANGUAGE sql VOLATILE SET search_path = pg_catalog AS $$
    SELECT encode(set_bit(set_bit(overlay(uuid_send(gen_random_uuid())
                                          PLACING substring(int8send(floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint) FROM 3)
                                          FROM 1 FOR 6), 52, 1), 53, 1), 'hex')::uuid
$$;
