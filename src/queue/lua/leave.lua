-- A worker leaving: out of the workers set only if nothing is left in flight; otherwise it
-- stays, its heartbeat lapses, and another worker recovers what is left.
-- KEYS[1] workers set, KEYS[2] this worker's in-flight set; ARGV[1] worker name
if redis.call('SCARD', KEYS[2]) == 0 then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return 1
end
return 0
