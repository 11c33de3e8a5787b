-- A run whose outcome could not be recorded (PostgreSQL down while dead-lettering): back to
-- the scheduled set, due at ARGV[2], so it runs again rather than being lost.
-- KEYS[1] this worker's in-flight set, KEYS[2] scheduled set; ARGV[1] run id, ARGV[2] due (unix s)
if redis.call('SREM', KEYS[1], ARGV[1]) == 1 then
    redis.call('ZADD', KEYS[2], tonumber(ARGV[2]), ARGV[1])
    return 1
end
return 0
