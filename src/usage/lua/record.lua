-- Counts one batch of usage for one tenant into its limit counters, atomically: items already
-- counted (their idempotency key is remembered) are skipped; if any month's limit would be
-- passed by the new units (and the metric is not billed as overage), nothing is counted;
-- otherwise every new item is remembered and added to its month's counter. Billing does not
-- rest on this: the caller writes every item to PostgreSQL before it answers.
--
-- Every key is the tenant's (one hash tag, one Redis Cluster slot) and is given in KEYS, three
-- per item: KEYS[3i-2] dedup key, KEYS[3i-1] month counter, KEYS[3i] warned mark.
-- ARGV[1] dedup TTL (s), ARGV[2] period TTL (s), ARGV[3] item count, ARGV[4] '1' when missing
-- month counters were just seeded (count from zero), then per item (4 each): quantity,
-- limit (-1: none), overage ('1'/'0'), metric.
-- Returns {'seed', item index...} when a counter the batch needs is missing (a new month, or
-- Redis lost it: the caller seeds it from PostgreSQL and calls again), {'limit', metric,
-- limit, used}, or {'ok', counted, duplicates, warned metric...}.
local n = tonumber(ARGV[3])
local function arg(i, k) return ARGV[4 + (i - 1) * 4 + k] end
local function key(i, k) return KEYS[(i - 1) * 3 + k] end

local seen, new, add, meta = {}, {}, {}, {}
local duplicates = 0
for i = 1, n do
    local dedup = key(i, 1)
    if seen[dedup] or redis.call('EXISTS', dedup) == 1 then
        duplicates = duplicates + 1
    else
        seen[dedup] = true
        table.insert(new, i)
        local period = key(i, 2)
        if not add[period] then
            add[period] = 0
            meta[period] = {tonumber(arg(i, 2)), arg(i, 3), key(i, 3), arg(i, 4), i}
        end
        add[period] = add[period] + tonumber(arg(i, 1))
    end
end

if ARGV[4] ~= '1' then
    local missing = {'seed'}
    for period, _ in pairs(add) do
        if redis.call('EXISTS', period) == 0 then
            table.insert(missing, meta[period][5])
        end
    end
    if #missing > 1 then
        return missing
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
    local q = tonumber(arg(i, 1))
    redis.call('SET', key(i, 1), 1, 'EX', ARGV[1])
    redis.call('INCRBY', key(i, 2), q)
    redis.call('EXPIRE', key(i, 2), ARGV[2])
end

local result = {'ok', #new, duplicates}
for period, units in pairs(add) do
    local limit, _, warned, metric = unpack(meta[period])
    local threshold = limit * 0.8
    if limit > 0 and before[period] < threshold and before[period] + units >= threshold then
        if redis.call('SET', warned, 1, 'NX', 'EX', ARGV[2]) then
            table.insert(result, metric)
        end
    end
end
return result
