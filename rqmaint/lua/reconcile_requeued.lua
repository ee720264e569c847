-- reconcile_requeued.lua: repair jobs that rqmaint just requeued and that a lock-less RQ cleanup
-- (StartedJobRegistry.cleanup run by `rq info` or registry.count) overwrote afterwards: its EXEC,
-- prepared from a read taken before our requeue, marks the job failed (it is then both queued and in
-- the failed registry) or retries it (pushing the id a second time, or scheduling it).
--
-- KEYS     none (keys derived from the ids, as in requeue_abandoned.lua)
-- ARGV[1]  queue name the jobs were requeued from (fallback when a job has no origin)
-- ARGV[2]  unused, reserved (enqueued_at of the run)
-- ARGV[3..] job ids
-- Touches  rq:queue:<origin> (LREM of duplicates only), rq:failed:<origin>, rq:scheduled:<origin>,
--          rq:job:<id> (status, TTL).
-- Returns  flat pairs: job id, action ("ok", "dedup", "unfailed", "unscheduled", or several joined
--          with "+").

local qname = ARGV[1]
local out = {}

local function restore_ttl(id, jkey)
    local ttl = tonumber(redis.call('HGET', jkey, 'ttl') or '')
    if ttl and ttl > 0 then
        redis.call('EXPIRE', jkey, math.floor(ttl))
    else
        redis.call('PERSIST', jkey)
        redis.call('PERSIST', 'rq:job:' .. id .. ':dependents')
        redis.call('PERSIST', 'rq:job::' .. id .. ':dependencies')
    end
end

local function running(id)
    local origin = redis.call('HGET', 'rq:job:' .. id, 'origin') or qname
    local wip = 'rq:wip:' .. origin
    if redis.call('ZSCORE', wip, id) then return true end
    for _, exec in ipairs(redis.call('ZRANGE', 'rq:executions:' .. id, 0, -1)) do
        if redis.call('ZSCORE', wip, id .. ':' .. exec) then return true end
    end
    return false
end

for i = 3, #ARGV do
    local id = ARGV[i]
    local jkey = 'rq:job:' .. id
    local actions = {}
    local origin = redis.call('HGET', jkey, 'origin')
    if not origin or origin == '' then origin = qname end
    local qkey = 'rq:queue:' .. origin
    local positions = redis.call('LPOS', qkey, id, 'COUNT', 0)
    if #positions > 1 then
        redis.call('LREM', qkey, -(#positions - 1), id)
        actions[#actions + 1] = 'dedup'
    end
    local status = redis.call('HGET', jkey, 'status')
    local fkey, skey = 'rq:failed:' .. origin, 'rq:scheduled:' .. origin
    if status == 'failed' and redis.call('ZSCORE', fkey, id) then
        if #positions >= 1 then
            redis.call('ZREM', fkey, id)
            redis.call('HSET', jkey, 'status', 'queued')
            restore_ttl(id, jkey)
            actions[#actions + 1] = 'unfailed'
        elseif running(id) then
            redis.call('ZREM', fkey, id)  -- a worker already runs it: its outcome will be recorded
            actions[#actions + 1] = 'unfailed'
        end
    elseif status == 'scheduled' and redis.call('ZSCORE', skey, id) and #positions >= 1 then
        redis.call('ZREM', skey, id)
        redis.call('HSET', jkey, 'status', 'queued')
        actions[#actions + 1] = 'unscheduled'
    end
    out[#out + 1] = id
    if #actions == 0 then out[#out + 1] = 'ok' else out[#out + 1] = table.concat(actions, '+') end
end
return out
