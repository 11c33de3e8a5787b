-- A worker's heartbeat: its score in the workers set is now. Returns the other workers of the
-- queue silent since ARGV[2]: dead, their runs in flight to be reclaimed (reclaim.lua, one call
-- per worker, given that worker's in-flight set as a key).
-- KEYS[1] workers set; ARGV[1] now (unix s), ARGV[2] dead before (unix s), ARGV[3] this worker
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], 0, tonumber(ARGV[2]))
local others = {}
for _, worker in ipairs(dead) do
    if worker ~= ARGV[3] then
        others[#others + 1] = worker
    end
end
return others
