-- Finished runs: out of the worker's in-flight set, their data deleted at once (apalis-redis
-- keeps a done set that nothing trims). ARGV: run ids (at most 1,000).
-- KEYS[1] this worker's in-flight set, KEYS[2] data hash
redis.call('SREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
return #ARGV
