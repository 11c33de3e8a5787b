-- A worker's heartbeat: its score in the workers set is now; then every other worker of the
-- queue silent since ARGV[2] is dead: its runs in flight go back to the active list (in
-- chunks: Lua's unpack has a limit) and it leaves the set. Returns how many runs came back.
-- KEYS[1] workers set, KEYS[2] active list, KEYS[3] in-flight prefix
-- ARGV[1] now (unix s), ARGV[2] dead before (unix s), ARGV[3] this worker, ARGV[4] wake-up channel
redis.call('ZADD', KEYS[1], tonumber(ARGV[1]), ARGV[3])
local dead = redis.call('ZRANGEBYSCORE', KEYS[1], 0, tonumber(ARGV[2]))
local moved = 0
for _, worker in ipairs(dead) do
    if worker ~= ARGV[3] then
        local set = KEYS[3] .. ':' .. worker
        local ids = redis.call('SMEMBERS', set)
        for i = 1, #ids, 1000 do
            redis.call('RPUSH', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
        end
        redis.call('DEL', set)
        redis.call('ZREM', KEYS[1], worker)
        moved = moved + #ids
    end
end
if moved > 0 then
    redis.call('PUBLISH', ARGV[4], moved)
end
return moved
