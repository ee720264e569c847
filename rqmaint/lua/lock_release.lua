-- lock_release.lua: compare-and-delete of a lock, recorded in the audit trail in the same step.
-- KEYS[1]  the lock key (<prefix>:clean_registries:<queue>)
-- KEYS[2]  the audit trail (<own>audit, rqmaint.audit; in the lock's hash slot: the same prefix)
-- ARGV[1]  the value the caller holds (or was shown)
-- ARGV[2]  the queue name, ARGV[3] the detail to record (the value, shortened by the caller if long)
-- ARGV[4]  run id, ARGV[5] by, ARGV[6] length cap (XADD MAXLEN ~), ARGV[7] trim LIMIT,
--          ARGV[8] age cap in seconds (rqmaint.audit.script_args)
-- Returns  1 if the key held exactly ARGV[1] and was deleted (and recorded), 0 otherwise (absent or
--          changed hands: nothing written).
-- Touches  KEYS[1], KEYS[2].
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
    return 0
end
local deleted = redis.call('DEL', KEYS[1])
local limit = tonumber(ARGV[7])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', tonumber(ARGV[6]), 'LIMIT', limit, '*', 'action', 'lock_release',
    'queue', ARGV[2], 'job', '', 'detail', ARGV[3], 'run', ARGV[4], 'by', ARGV[5])
local t = redis.call('TIME')
local minid = string.format('%d-0', math.max(0, (tonumber(t[1]) - tonumber(ARGV[8])) * 1000))
redis.call('XTRIM', KEYS[2], 'MINID', '~', minid, 'LIMIT', limit)
return deleted
