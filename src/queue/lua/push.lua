-- Ballast's push, on apalis-redis 1.0's layout (data hash, active list, scheduled set,
-- idempotency keys). A run due now goes straight to the active list: apalis-redis gives every
-- push a run time, so its fetch would promote the whole backlog from the scheduled set with one
-- `unpack`, which fails beyond ~8,000 entries. No per-run meta hash and no signal list: only
-- apalis-redis's own fetch read them, and Ballast's consumer (consumer.rs) does not.
--
-- A run's id is derived from its job's (see `run_id` in mod.rs), so one job is found by id
-- with one HMGET and no index to keep: the id as given, else the same with '*' (the run this
-- one requeues is not acknowledged yet), else a fresh ULID (a third run of one id at once: two
-- callers chose the same job id, or two ids share a digest prefix; it runs, but only a scan
-- finds it).
--
-- KEYS[1] data hash, KEYS[2] active list, KEYS[3] scheduled set, KEYS[4..] idempotency keys
-- ARGV[1] now (unix s), ARGV[2] wake-up channel
-- ARGV[3..] per task: id, data, run_at (unix s, 0 = now), index of its idempotency key in KEYS
-- (0 = none), its TTL (s), the job id the key remembers, a ULID to fall back to
-- Returns {ready, scheduled, {job id remembered by each key already used, in push order}}.
local ready, scheduled, used = 0, 0, {}
local now = tonumber(ARGV[1])
for i = 3, #ARGV, 7 do
    local id, data, run_at, key, ttl, job = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3]), ARGV[i + 4], ARGV[i + 5]
    local allowed = true
    if key > 0 then
        if redis.call('SET', KEYS[key], job, 'NX', 'EX', ttl) == false then
            allowed = false
            used[#used + 1] = redis.call('GET', KEYS[key]) or ''
        end
    end
    if allowed and redis.call('HSETNX', KEYS[1], id, data) == 0 then
        id = id .. '*'
        if redis.call('HSETNX', KEYS[1], id, data) == 0 then
            id = ARGV[i + 6]
            allowed = redis.call('HSETNX', KEYS[1], id, data) == 1
        end
    end
    if allowed then
        if run_at > now then
            redis.call('ZADD', KEYS[3], run_at, id)
            scheduled = scheduled + 1
        else
            redis.call('RPUSH', KEYS[2], id)
            ready = ready + 1
        end
    end
end
if ready > 0 then
    redis.call('PUBLISH', ARGV[2], 1)
end
return {ready, scheduled, used}
