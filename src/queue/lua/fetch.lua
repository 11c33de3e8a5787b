-- Ballast's fetch on apalis-redis's layout: up to ARGV[1] ready runs move from the active list
-- into this worker's in-flight set, returned with their data as {id, data, id, data, ...}.
-- A worker that is not in the workers set (Redis lost its data, or another member declared it
-- dead) gets an error and registers again: runs in flight must always belong to a worker that
-- others can see, or nobody would recover them.
--
-- A paused queue (KEYS[5] present: an operator paused the kind) hands out nothing; its jobs
-- wait in the list until it is resumed.
--
-- KEYS[1] active list, KEYS[2] this worker's in-flight set, KEYS[3] data hash, KEYS[4] workers set,
-- KEYS[5] the queue's paused flag
-- ARGV[1] max runs, ARGV[2] worker name
if not redis.call('ZSCORE', KEYS[4], ARGV[2]) then
    return redis.error_reply('NOREG worker not registered')
end
if redis.call('EXISTS', KEYS[5]) == 1 then
    return {}
end
local ids = redis.call('LRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1)
if #ids == 0 then
    return {}
end
redis.call('LTRIM', KEYS[1], #ids, -1)
redis.call('SADD', KEYS[2], unpack(ids))
local data = redis.call('HMGET', KEYS[3], unpack(ids))
local out = {}
for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = data[i] or ''
end
return out
