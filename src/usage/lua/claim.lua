-- Claims one arrival window for a flush: its hash moves aside under the flush's id, the window
-- leaves the open set, and the claim is recorded, all at once. A write that arrives later for
-- the same minute starts a fresh hash and re-adds the window, so nothing is lost.
--
-- KEYS[1] the window hash, KEYS[2] the claimed hash, KEYS[3] open windows, KEYS[4] claims set.
-- ARGV[1] the window (minute), ARGV[2] the flush id. Returns 1 when claimed, 0 when empty.
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then
    return 0
end
redis.call('RENAME', KEYS[1], KEYS[2])
redis.call('SADD', KEYS[4], ARGV[2])
return 1
