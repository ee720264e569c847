-- lock_renew.lua: extend a lease only while it is still ours.
-- KEYS[1]  the lock key (rq:clean_registries:<queue>)
-- ARGV[1]  the value this holder wrote when it acquired the lock
-- ARGV[2]  the new time to live, in milliseconds
-- Returns  1 if the key held ARGV[1] and its TTL was set, 0 otherwise (lease lost).
-- Touches  KEYS[1] only.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
