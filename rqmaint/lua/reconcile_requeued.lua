-- reconcile_requeued.lua: repair jobs that rqmaint requeued and that a lock-less RQ cleanup
-- (StartedJobRegistry.cleanup, run without the lock by `rq info` and registry.count) overwrote
-- afterwards. Such a cleanup reads the expired entries first and EXECs its transaction later, so
-- if our requeue ran in between, its EXEC marks the requeued job failed (it is then queued AND in
-- the failed registry), or retries it (pushing the id a second time, or scheduling it).
--
-- KEYS     none (keys derived from the ids, as in requeue_abandoned.lua)
-- ARGV[1]  queue name (the origin the jobs were requeued to)
-- ARGV[2..] ledger members "<id>|<retries_left at requeue>" (from rqmaint:requeued:<queue>)
-- Touches  rq:queue:<q> (LREM of duplicates only), rq:failed:<q>, rq:scheduled:<q>, rq:job:<id>
--          (status, started_at, ended_at, TTL).
-- Returns  flat pairs for the repaired jobs only: job id, action: "unfailed" (failure record of a
--          lost race removed, job queued again), "stale_failed" (a worker already took it; registry
--          entry removed), "unscheduled", "dedup", several joined with "+".

local qname = ARGV[1]
local qkey = 'rq:queue:' .. qname
local fkey, skey = 'rq:failed:' .. qname, 'rq:scheduled:' .. qname
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
    local wip = 'rq:wip:' .. qname
    if redis.call('ZSCORE', wip, id) then return true end
    for _, exec in ipairs(redis.call('ZRANGE', 'rq:executions:' .. id, 0, -1)) do
        if redis.call('ZSCORE', wip, id .. ':' .. exec) then return true end
    end
    return false
end

for i = 2, #ARGV do
    local entry = ARGV[i]
    local bar = string.find(entry, '|', 1, true)
    local id = entry
    local retries_then = ''
    if bar then
        id = string.sub(entry, 1, bar - 1)
        retries_then = string.sub(entry, bar + 1)
    end
    local jkey = 'rq:job:' .. id
    local actions = {}
    local f = redis.call('HMGET', jkey, 'status', 'retries_left')
    local status, retries_now = f[1], f[2] or ''
    local queued_times = nil
    local function in_queue()
        if queued_times == nil then queued_times = #redis.call('LPOS', qkey, id, 'COUNT', 0) end
        return queued_times
    end
    if redis.call('ZSCORE', fkey, id) then
        if status == 'failed' then
            if in_queue() >= 1 then
                -- queued and failed at once: the failure is a lost race's; the queue entry wins
                redis.call('ZREM', fkey, id)
                redis.call('HSET', jkey, 'status', 'queued', 'started_at', '', 'ended_at', '')
                restore_ttl(id, jkey)
                actions[#actions + 1] = 'unfailed'
            elseif running(id) then
                redis.call('ZREM', fkey, id)  -- a worker runs it: its outcome will be recorded
                actions[#actions + 1] = 'stale_failed'
            end
            -- else: not queued, not running: a genuine later failure; left as RQ recorded it
        elseif status == 'started' or status == 'finished' or status == 'queued' then
            redis.call('ZREM', fkey, id)  -- a worker took it after the lost race: stale entry
            actions[#actions + 1] = 'stale_failed'
        end
    end
    if status == 'scheduled' and redis.call('ZSCORE', skey, id) and in_queue() >= 1 then
        redis.call('ZREM', skey, id)
        redis.call('HSET', jkey, 'status', 'queued')
        actions[#actions + 1] = 'unscheduled'
    end
    if retries_now ~= retries_then and in_queue() > 1 then
        redis.call('LREM', qkey, -(queued_times - 1), id)
        actions[#actions + 1] = 'dedup'
    end
    if #actions > 0 then
        out[#out + 1] = id
        out[#out + 1] = table.concat(actions, '+')
    end
end
return out
