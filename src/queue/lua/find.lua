-- One job's newest queued run, by job id, through the job index (see push.lua): its data, or
-- nil. An entry whose run is gone (an id the acknowledger could not read plainly) is removed.
-- KEYS[1] job index, KEYS[2] data hash; ARGV[1] job id
local run = redis.call('HGET', KEYS[1], ARGV[1])
if not run then
    return false
end
local data = redis.call('HGET', KEYS[2], run)
if not data then
    redis.call('HDEL', KEYS[1], ARGV[1])
    return false
end
return data
