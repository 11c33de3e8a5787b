-- Finished runs: out of the worker's in-flight set, their data deleted at once (apalis-redis
-- keeps a done set that nothing trims), and their job's index entry removed while it still
-- names this run (a retry pushed before the ack has already pointed it at the next run).
-- KEYS[1] this worker's in-flight set, KEYS[2] data hash, KEYS[3] job index
-- ARGV[1] n (at most 1,000), ARGV[2..n+1] run ids, ARGV[n+2..2n+1] their job ids ('' = unknown)
local n = tonumber(ARGV[1])
redis.call('SREM', KEYS[1], unpack(ARGV, 2, n + 1))
redis.call('HDEL', KEYS[2], unpack(ARGV, 2, n + 1))
for i = 2, n + 1 do
    local job = ARGV[n + i]
    if job ~= '' and redis.call('HGET', KEYS[3], job) == ARGV[i] then
        redis.call('HDEL', KEYS[3], job)
    end
end
return n
