-- Stores a loaded value only while the loader still holds the key's lock, then releases it.
-- An invalidation deletes the value and the lock together, so a load that began before a
-- commit cannot write its older answer back after that commit's invalidation.
-- KEYS[1] value key, KEYS[2] lock key; ARGV[1] lock token, ARGV[2] envelope, ARGV[3] TTL ms.
if redis.call('GET', KEYS[2]) ~= ARGV[1] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('DEL', KEYS[2])
return 1
