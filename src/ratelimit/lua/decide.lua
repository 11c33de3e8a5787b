-- One rate-limit decision, atomically: a ban check, sliding-log windows (exact: one member per
-- admitted request, scored by its time), optional failure counting, and block accounting.
--
-- KEYS[1] ban key (''-named key unused when ARGV[4] = '0'), KEYS[2] failure log,
-- KEYS[3] blocks hash of the current minute, then per limit i: KEYS[3+2i-1] window log,
-- KEYS[3+2i] override key.
-- ARGV[1] now (ms), ARGV[2] unique member, ARGV[3] number of limits,
-- ARGV[4] check the ban ('1'/'0'), ARGV[5] record a failure ('1'/'0'),
-- ARGV[6] failure limit, ARGV[7] failure window (ms), ARGV[8] ban (ms), ARGV[9] ban subject,
-- then per limit i: ARGV[9+3i-2] limit, ARGV[9+3i-1] window (ms), ARGV[9+3i] 'policy|subject'.
--
-- Returns {outcome, retry_ms, index, then per limit: effective limit, remaining}:
-- outcome 0 admitted, 1 blocked by limit `index`, 2 banned (retry_ms until the ban lifts).
local now = tonumber(ARGV[1])
local member = ARGV[2]
local n = tonumber(ARGV[3])

local function count_block(field)
    redis.call('HINCRBY', KEYS[3], field, 1)
    redis.call('EXPIRE', KEYS[3], 172800)
end

if ARGV[4] == '1' then
    local until_ms = tonumber(redis.call('GET', KEYS[1]) or '0')
    if until_ms > now then
        count_block('auth_failures|' .. ARGV[9])
        return {2, until_ms - now, 0}
    end
end

if ARGV[5] == '1' then
    local window = tonumber(ARGV[7])
    redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - window)
    redis.call('ZADD', KEYS[2], now, member)
    redis.call('PEXPIRE', KEYS[2], window)
    if redis.call('ZCARD', KEYS[2]) >= tonumber(ARGV[6]) then
        local ban = tonumber(ARGV[8])
        redis.call('SET', KEYS[1], now + ban, 'PX', ban)
        redis.call('DEL', KEYS[2])
    end
end

local result = {0, 0, 0}
local blocked = 0
local retry = 0
for i = 1, n do
    local log, override = KEYS[3 + 2 * i - 1], KEYS[3 + 2 * i]
    local limit, window, label = tonumber(ARGV[9 + 3 * i - 2]), tonumber(ARGV[9 + 3 * i - 1]), ARGV[9 + 3 * i]
    local allow = false
    local ov = redis.call('GET', override)
    if ov then
        local kind, a, b = string.match(ov, '^(%a+):(%d+):?(%d*)$')
        if kind == 'allow' and tonumber(a) > now then
            allow = true
        elseif kind == 'limit' and b ~= '' and tonumber(b) > now then
            limit = tonumber(a)
        end
    end
    redis.call('ZREMRANGEBYSCORE', log, '-inf', now - window)
    local used = redis.call('ZCARD', log)
    if not allow and used >= limit and blocked == 0 then
        blocked = i
        local oldest = redis.call('ZRANGE', log, 0, 0, 'WITHSCORES')
        retry = tonumber(oldest[2]) + window - now
        count_block(label)
    end
    table.insert(result, limit)
    table.insert(result, math.max(limit - used, 0))
end

if blocked > 0 then
    result[1], result[2], result[3] = 1, retry, blocked
    return result
end
for i = 1, n do
    local log, window = KEYS[3 + 2 * i - 1], tonumber(ARGV[9 + 3 * i - 1])
    redis.call('ZADD', log, now, member)
    redis.call('PEXPIRE', log, window)
    result[3 + 2 * i] = math.max(result[3 + 2 * i] - 1, 0)
end
return result
