-- A dead worker's runs in flight go back to the active list (in chunks: Lua's unpack has a
-- limit) and it leaves the workers set, unless it beat again meanwhile or another member
-- already reclaimed it. Returns how many runs came back.
-- KEYS[1] workers set, KEYS[2] active list, KEYS[3] the dead worker's in-flight set
-- ARGV[1] the dead worker, ARGV[2] dead before (unix s), ARGV[3] wake-up channel
local score = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not score or tonumber(score) > tonumber(ARGV[2]) then
    return 0
end
local ids = redis.call('SMEMBERS', KEYS[3])
for i = 1, #ids, 1000 do
    redis.call('RPUSH', KEYS[2], unpack(ids, i, math.min(i + 999, #ids)))
end
redis.call('DEL', KEYS[3])
redis.call('ZREM', KEYS[1], ARGV[1])
if #ids > 0 then
    redis.call('PUBLISH', ARGV[3], #ids)
end
return #ids
