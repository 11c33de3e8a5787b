-- Records one batch of usage for one tenant, atomically: items already counted (their
-- idempotency key is remembered) are skipped; if any month's limit would be passed by the new
-- units (and the metric is not billed as overage), nothing is recorded; otherwise every new
-- item is remembered, added to this arrival minute's window and to its month's counter.
--
-- KEYS[1] sorted set of open windows, KEYS[2] this arrival minute's window hash.
-- ARGV[1] arrival minute, ARGV[2] dedup TTL (s), ARGV[3] period TTL (s), ARGV[4] item count,
-- then per item (8 each): dedup key, window field, period key, quantity, limit (-1: none),
-- overage ('1'/'0'), warned key, metric.
-- Returns {'limit', metric, limit, used} or {'ok', counted, duplicates, warned metric...}.
local n = tonumber(ARGV[4])
local function arg(i, k) return ARGV[4 + (i - 1) * 8 + k] end

local seen, new, add, meta = {}, {}, {}, {}
local duplicates = 0
for i = 1, n do
    local dedup = arg(i, 1)
    if seen[dedup] or redis.call('EXISTS', dedup) == 1 then
        duplicates = duplicates + 1
    else
        seen[dedup] = true
        table.insert(new, i)
        local period = arg(i, 3)
        add[period] = (add[period] or 0) + tonumber(arg(i, 4))
        meta[period] = {tonumber(arg(i, 5)), arg(i, 6), arg(i, 7), arg(i, 8)}
    end
end

local before = {}
for period, units in pairs(add) do
    local used = tonumber(redis.call('GET', period) or '0')
    before[period] = used
    local limit, overage, _, metric = unpack(meta[period])
    if limit >= 0 and overage ~= '1' and used + units > limit then
        return {'limit', metric, limit, used}
    end
end

for _, i in ipairs(new) do
    local q = tonumber(arg(i, 4))
    redis.call('SET', arg(i, 1), 1, 'EX', ARGV[2])
    redis.call('HINCRBY', KEYS[2], arg(i, 2), q)
    redis.call('INCRBY', arg(i, 3), q)
    redis.call('EXPIRE', arg(i, 3), ARGV[3])
end
if #new > 0 then
    redis.call('ZADD', KEYS[1], ARGV[1], ARGV[1])
end

local result = {'ok', #new, duplicates}
for period, units in pairs(add) do
    local limit, _, warned, metric = unpack(meta[period])
    local threshold = limit * 0.8
    if limit > 0 and before[period] < threshold and before[period] + units >= threshold then
        if redis.call('SET', warned, 1, 'NX', 'EX', ARGV[3]) then
            table.insert(result, metric)
        end
    end
end
return result
