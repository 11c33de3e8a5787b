-- Finished runs: out of the worker's in-flight set, their data deleted at once (apalis-redis
-- keeps a done set that nothing trims), and the meta record that runs pushed before Ballast's
-- own push (or by apalis-redis) carry. ARGV: run ids (at most 1,000).
-- KEYS[1] this worker's in-flight set, KEYS[2] data hash, KEYS[3] meta prefix
redis.call('SREM', KEYS[1], unpack(ARGV))
redis.call('HDEL', KEYS[2], unpack(ARGV))
for _, id in ipairs(ARGV) do
    redis.call('DEL', KEYS[3] .. ':' .. id)
end
return #ARGV
