-- lock_release.lua: compare-and-delete of a lock.
-- KEYS[1]  the lock key (rq:clean_registries:<queue>)
-- ARGV[1]  the value the caller holds (or was shown)
-- Returns  1 if the key held exactly ARGV[1] and was deleted, 0 otherwise (absent or changed hands).
-- Touches  KEYS[1] only.
if redis.call('GET', KEYS[1]) == ARGV[1] then
    return redis.call('DEL', KEYS[1])
end
return 0
