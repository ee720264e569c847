-- requeue_abandoned.lua: put a batch of abandoned RQ jobs back on their queue, atomically per job,
-- re-checking every job's state inside the script (the Python side only proposes candidates).
--
-- KEYS     none: job, execution and worker keys are derived from the members, as RQ's own scripts
--          do (so this is not Redis Cluster safe, like RQ itself).
-- ARGV[1]  mode: "started" (members of rq:wip:<queue>), "intermediate" (ids in
--          rq:queue:<queue>:intermediate) or "failed" (ids in rq:failed:<queue>)
-- ARGV[2]  queue name of the registry the members come from
-- ARGV[3]  now, epoch seconds (the caller's clock, as RQ uses its own)
-- ARGV[4]  enqueued_at to write, RQ's format (%Y-%m-%dT%H:%M:%S.%fZ)
-- ARGV[5]  "1" to push at the front of the queue (LPUSH), else "0" (RPUSH)
-- ARGV[6]  max requeues: a job abandoned more often than this is given up (moved to failed)
-- ARGV[7]  seconds to keep a job's abandonment counter (rqmaint:abandons:<id>)
-- ARGV[8]  give-up reason for exactly max+1 abandonments: base64(zlib(text)) for rq:results
-- ARGV[9]  the same reason as zlib(text), for the job hash's exc_info (RQ < 2.2 reads it there)
-- ARGV[10] give-up reason for more than max+1 abandonments (max was lowered): base64(zlib(text))
-- ARGV[11] the same, zlib(text)
-- ARGV[12] seconds an intermediate-queue job must have been seen before it counts as stuck (60)
-- ARGV[13] this call's ledger score: every requeue is recorded in rqmaint:requeued:<queue> (the registry's queue) with it
-- ARGV[14] a previous call's ledger score, or "": the ledger entries of that score are reconciled
--          first (see "Lost races" below)
-- ARGV[15..] started: offset, limit — the script itself takes the due members of rq:wip:<queue>
--          (ZRANGEBYSCORE -inf now LIMIT offset limit). intermediate: the ids. failed: pairs of id,
--          expectation: the failure record the caller recognised as AbandonedJobError, "s" ..
--          newest results-stream entry id, or "h" .. the raw exc_info value (the job is only touched
--          if that record is unchanged). reconcile: ledger entries "<id>|<retries_left>" to check.
--
-- Lost races. RQ's StartedJobRegistry.cleanup, run without the lock by `rq info` and
-- registry.count, reads the expired entries first and EXECs its transaction later; if our requeue
-- ran in between, its EXEC marks the requeued job failed (queued AND in the failed registry) or
-- retries it (pushing the id a second time, or scheduling it). Each ledger entry is re-checked:
-- queued and failed -> the failure record of the lost race is removed ("unfailed"); failed while a
-- worker already runs it, or started/finished/queued yet in the failed registry -> the stale entry is
-- removed ("stale_failed"); scheduled and queued -> "unscheduled"; retries_left changed and queued
-- twice -> the extra push is removed ("dedup").
--
-- Touches  rq:wip:<q>, rq:job:<id>, rq:job:<id>:dependents, rq:job::<id>:dependencies,
--          rq:queue:<origin>, rq:queues, rq:queue:<origin>:intermediate(+:first_seen:<id>),
--          rq:execution:<id>:<exec>, rq:executions:<id>, rq:worker:<w> (HDEL current_job only, never
--          creating it), rq:worker:<w>:executions (SREM), rq:failed:<origin>, rq:results:<id>,
--          rqmaint:abandons:<id>, rqmaint:requeued:<queue> (ZADD "<id>|<retries_left>" at ARGV[13]),
--          rq:scheduled:<q> (ZREM, when reconciling).
-- Returns  one JSON string (cjson): a flat array of triples: outcome, job id (or member), detail
--          (given_up: the abandonment count; reconciled: the repair). Two totals close it:
--          requeued ("" and how many; their ids are in the ledger) and scanned ("" and how many
--          members the call looked at), after "more" ("" and 1) when the work budget ended the call
--          before its last member (the caller sends the rest again). One bulk string parses far faster client-side than thousands
--          of replies.
--          Outcomes: requeued, given_up, already_queued, first_seen (intermediate job seen for the
--          first time; marked), gone (no longer in the registry or changed: someone else handled it),
--          not_due, live_worker, in_started, missing_job, no_origin, unknown_origin, malformed,
--          unverified (marked queued, on a queue too long to check cheaply: left alone),
--          status (detail = the job's status, which is not one we requeue), reconciled.

local mode = ARGV[1]
local qname = ARGV[2]
local now = tonumber(ARGV[3])
local enqueued_at = ARGV[4]
local at_front = ARGV[5] == '1'
local max_requeues = tonumber(ARGV[6])
local counter_ttl = tonumber(ARGV[7])
local exact_b64, exact_z, more_b64, more_z = ARGV[8], ARGV[9], ARGV[10], ARGV[11]
local stuck_after = tonumber(ARGV[12])
local LEDGER_TTL = 900  -- seconds; rqmaint.requeue.RECONCILE_WINDOW

local QUEUES = 'rq:queues'
local DEFAULT_FAILURE_TTL = 31536000
local wip = 'rq:wip:' .. qname
local out = {}
local requeued_n = 0
local inter_len = {}  -- origin -> LLEN of its intermediate list, read once per call

local function intermediate_nonempty(origin)
    if inter_len[origin] == nil then
        inter_len[origin] = redis.call('LLEN', 'rq:queue:' .. origin .. ':intermediate')
    end
    return inter_len[origin] > 0
end

local function emit(outcome, id, detail)
    out[#out + 1] = outcome
    out[#out + 1] = id
    out[#out + 1] = tostring(detail or '')
end

local function split(member)
    local pos = string.find(member, ':', 1, true)
    if pos then
        return string.sub(member, 1, pos - 1), string.sub(member, pos + 1)
    end
    return member, ''
end

local function valid_id(id)
    return id ~= '' and string.find(id, '^[%w_%-%.]+$') ~= nil
end

-- A plain number field (ttl, failure_ttl, first_seen): garbage, NaN, infinities and absurd values
-- give the default, so no later command (EXPIRE) can fail half-way through a job.
local function num_or(value, default)
    local n = tonumber(value)
    if n == nil or n ~= n or n >= 1e12 or n <= -1e12 then return default end
    return n
end

local function int_or(value, default)
    return math.floor(num_or(value, default))
end

-- Plain fields of a job hash read by this script, in one HMGET (F_* index it).
local JOB_FIELDS = {'status', 'origin', 'worker_name', 'ttl', 'retries_left', 'failure_ttl'}
local F_STATUS, F_ORIGIN, F_WORKER, F_TTL, F_RETRIES, F_FAILURE_TTL = 1, 2, 3, 4, 5, 6

local function job_fields(jkey)
    return redis.call('HMGET', jkey, unpack(JOB_FIELDS))
end

-- The job's origin, or nil plus an outcome when it cannot be requeued there.
local function origin_of(origin)
    if not origin or origin == '' then return nil, 'no_origin' end
    if origin ~= qname and redis.call('SISMEMBER', QUEUES, 'rq:queue:' .. origin) == 0 then
        return nil, 'unknown_origin'
    end
    return origin, nil
end

-- Is a live worker busy with this job? Only a worker whose hash exists, carries no death mark and
-- says it works on this job (current_job, RQ <= 2.x; or its executions set, RQ master) counts.
-- Returns live, and the worker's current_job (false when its hash is gone).
local function live_worker(id, member, wname)
    if not wname or wname == '' then return false, false end
    local wkey = 'rq:worker:' .. wname
    if redis.call('EXISTS', wkey) == 0 then return false, false end
    local w = redis.call('HMGET', wkey, 'death', 'current_job', 'state')
    local death, current, state = w[1], w[2], w[3]
    if death then return false, current end
    if current then return current == id, current end
    if state ~= 'busy' then return false, current end
    local execs = wkey .. ':executions'
    if redis.call('EXISTS', execs) == 0 then return true, current end  -- busy, can't tell with what
    return redis.call('SISMEMBER', execs, member) == 1, current
end

-- The job's other started entries, through its executions: true if one is still current (its
-- deadline ahead: that execution may be running), else the overdue ones to remove with it.
local function other_entries(id, member)
    local overdue = {}
    for _, exec in ipairs(redis.call('ZRANGE', 'rq:executions:' .. id, 0, -1)) do
        local other = id .. ':' .. exec
        if other ~= member then
            local score = redis.call('ZSCORE', wip, other)
            if score then
                if tonumber(score) > now then return true, overdue end
                overdue[#overdue + 1] = exec
            end
        end
    end
    if member ~= id then
        local score = redis.call('ZSCORE', wip, id)  -- RQ 1.16's plain member (or a stray one)
        if score and tonumber(score) > now then return true, overdue end
    end
    return false, overdue
end

-- Remove every trace of an execution: its started entry (``member``, whatever its form), execution
-- keys, worker references (without ever writing to a worker hash that may have expired), the
-- intermediate list and its first_seen key. ``current`` is the worker's current_job as live_worker
-- read it (false: no worker hash).
local function clear_execution(id, member, exec, wname, origin, current)
    if member then redis.call('ZREM', wip, member) end
    if exec ~= '' then
        redis.call('DEL', 'rq:execution:' .. id .. ':' .. exec)
        redis.call('ZREM', 'rq:executions:' .. id, exec)
    end
    if wname and wname ~= '' then
        local wkey = 'rq:worker:' .. wname
        if exec ~= '' then redis.call('SREM', wkey .. ':executions', id .. ':' .. exec) end
        if current == id then
            redis.call('HDEL', wkey, 'current_job', 'current_job_working_time')
        end
    end
    local inter = 'rq:queue:' .. origin .. ':intermediate'
    if intermediate_nonempty(origin) then redis.call('LREM', inter, 0, id) end
    redis.call('DEL', inter .. ':first_seen:' .. id)
end

local function dependency_keys(id)
    return 'rq:job:' .. id .. ':dependents', 'rq:job::' .. id .. ':dependencies'
end

-- Leave the job exactly as a fresh enqueue would: status queued, fresh enqueued_at, start/end cleared,
-- the key persisted or given the job's own ttl, the queue registered, the id pushed once.
local registered = {}  -- origins already SADDed to rq:queues by this call


local function requeue(id, jkey, origin, f)
    redis.call('HSET', jkey, 'status', 'queued', 'enqueued_at', enqueued_at, 'started_at', '',
        'ended_at', '', 'worker_name', '', 'last_heartbeat', '')
    redis.call('HDEL', jkey, 'exc_info')
    local deps1, deps2 = dependency_keys(id)
    local has_deps = redis.call('EXISTS', deps1, deps2) > 0  -- usually neither exists
    local ttl = int_or(f[F_TTL], -1)
    if ttl > 0 then
        redis.call('EXPIRE', jkey, ttl)
        if has_deps then
            redis.call('EXPIRE', deps1, ttl)
            redis.call('EXPIRE', deps2, ttl)
        end
    else
        redis.call('PERSIST', jkey)
        if has_deps then
            redis.call('PERSIST', deps1)
            redis.call('PERSIST', deps2)
        end
    end
    local qkey = 'rq:queue:' .. origin
    local retries = f[F_RETRIES] or ''
    redis.call('ZADD', 'rqmaint:requeued:' .. qname, ARGV[13], id .. '|' .. retries)
    if not registered[origin] then
        redis.call('SADD', QUEUES, qkey)
        registered[origin] = true
    end
    if at_front then
        redis.call('LPUSH', qkey, id)
    else
        redis.call('RPUSH', qkey, id)
    end
    return retries
end

-- Move the job to its origin's failed registry, as RQ's FailedJobRegistry.add does, with a reason
-- that says how often it was abandoned.
local function give_up(id, jkey, origin, count, f)
    local b64, z = exact_b64, exact_z
    if count > max_requeues + 1 then b64, z = more_b64, more_z end
    local failure_ttl = int_or(f[F_FAILURE_TTL], DEFAULT_FAILURE_TTL)
    local score = failure_ttl
    if failure_ttl >= 0 then score = math.floor(now) + failure_ttl end
    redis.call('HSET', jkey, 'status', 'failed', 'exc_info', z)
    redis.call('ZADD', 'rq:failed:' .. origin, score, id)
    local deps1, deps2 = dependency_keys(id)
    if failure_ttl > 0 then
        redis.call('EXPIRE', jkey, failure_ttl)
        redis.call('EXPIRE', deps1, failure_ttl)
        redis.call('EXPIRE', deps2, failure_ttl)
    else
        redis.call('PERSIST', jkey)
    end
    local rkey = 'rq:results:' .. id
    redis.call('XADD', rkey, 'MAXLEN', '~', 10, '*', 'type', 2, 'worker_name', '', 'exc_string', b64)
    if failure_ttl > 0 then redis.call('EXPIRE', rkey, failure_ttl) end
end

-- Count this abandonment and requeue the job, or give it up past the limit.
local function settle(id, jkey, origin, f)
    local ckey = 'rqmaint:abandons:' .. id
    local count = redis.call('INCR', ckey)
    redis.call('EXPIRE', ckey, counter_ttl)
    if count > max_requeues then
        give_up(id, jkey, origin, count, f)
        emit('given_up', id, count)
    else
        requeue(id, jkey, origin, f)
        requeued_n = requeued_n + 1  -- reported as one total: the ledger holds the ids
    end
end

local function requeueable_status(status)
    return status == 'started' or status == 'queued'
end

-- Is the id already on its queue list? Never a scan of the list per job (a backlog can hold millions).
-- A job whose status is "started" is not on it: every path that pushes an id onto a queue list (RQ's
-- enqueue, retry, requeue, dependents, scheduler; rqmaint's requeue) writes status "queued" in the same
-- MULTI/EXEC or script as the push, and a worker writes "started" only after LMOVE/LPOP took its copy
-- off the list. A second copy can only come from a lost race against RQ's lock-less cleanup, which the
-- ledger re-check repairs. So only a job still marked "queued" (a crash between dequeue and the work
-- horse, or an id enqueued again) is looked for, and only within QUEUED_SCAN entries from either end:
-- past that the answer is "unknown" and the job is left alone (outcome unverified), never pushed twice.
-- A list of up to STARTED_CHECK entries is still looked through for a started job (about 10 us):
-- defence in depth against data no RQ path writes; a longer one is trusted to the argument above.
local QUEUED_SCAN = 10000
local STARTED_CHECK = 1000
local function queued_on(qkey, id, status)
    local len = redis.call('LLEN', qkey)
    if len == 0 then return false end
    if status == 'started' then
        return len <= STARTED_CHECK and redis.call('LPOS', qkey, id) ~= false
    end
    if len <= 2 * QUEUED_SCAN then return redis.call('LPOS', qkey, id) ~= false end
    if redis.call('LPOS', qkey, id, 'MAXLEN', QUEUED_SCAN) then return true end
    if redis.call('LPOS', qkey, id, 'RANK', -1, 'MAXLEN', QUEUED_SCAN) then return true end
    return nil  -- unknown
end

-- How many copies of the id the queue list holds, counted within QUEUED_SCAN entries from either end
-- (exact for a list of up to 2 * QUEUED_SCAN), and how many of them are in the tail part.
local function copies_on(qkey, id)
    local len = redis.call('LLEN', qkey)
    if len == 0 then return 0, 0 end
    if len <= 2 * QUEUED_SCAN then
        local n = #redis.call('LPOS', qkey, id, 'COUNT', 0)
        return n, n
    end
    local head = #redis.call('LPOS', qkey, id, 'COUNT', 0, 'MAXLEN', QUEUED_SCAN)
    local tail = #redis.call('LPOS', qkey, id, 'RANK', -1, 'COUNT', 0, 'MAXLEN', QUEUED_SCAN)
    return head + tail, tail
end

-- Lost races (see the header): re-check one ledger entry and repair what a late RQ EXEC broke.
local function restore_ttl(id, jkey)
    local ttl = int_or(redis.call('HGET', jkey, 'ttl'), -1)
    if ttl > 0 then
        redis.call('EXPIRE', jkey, ttl)
    else
        redis.call('PERSIST', jkey)
        redis.call('PERSIST', 'rq:job:' .. id .. ':dependents')
        redis.call('PERSIST', 'rq:job::' .. id .. ':dependencies')
    end
end

local function running(id, origin)
    local owip = 'rq:wip:' .. origin
    if redis.call('ZSCORE', owip, id) then return true end
    for _, exec in ipairs(redis.call('ZRANGE', 'rq:executions:' .. id, 0, -1)) do
        if redis.call('ZSCORE', owip, id .. ':' .. exec) then return true end
    end
    return false
end

local function reconcile(entry)
    local bar = string.find(entry, '|', 1, true)
    local id = entry
    local retries_then = ''
    if bar then
        id = string.sub(entry, 1, bar - 1)
        retries_then = string.sub(entry, bar + 1)
    end
    local jkey = 'rq:job:' .. id
    local actions = {}
    local f = redis.call('HMGET', jkey, 'status', 'retries_left', 'origin')
    local status, retries_now = f[1], f[2] or ''
    local origin = f[3]
    if not origin or origin == '' then origin = qname end
    local own_queue = 'rq:queue:' .. origin
    local fkey, skey = 'rq:failed:' .. origin, 'rq:scheduled:' .. origin
    local queued_times, in_tail = nil, 0
    local function in_queue()  -- a lower bound on a long list: a repair is only made on what was seen
        if queued_times == nil then queued_times, in_tail = copies_on(own_queue, id) end
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
            elseif running(id, origin) then
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
    if retries_now ~= retries_then and in_queue() > 1 and in_tail > 0 then
        -- from the tail, and no more copies than the tail part holds: the LREM stops within it
        redis.call('LREM', own_queue, -math.min(queued_times - 1, in_tail), id)
        actions[#actions + 1] = 'dedup'
    end
    if #actions > 0 then emit('reconciled', id, table.concat(actions, '+')) end
end

local ledger = 'rqmaint:requeued:' .. qname
if ARGV[14] ~= '' then
    for _, entry in ipairs(redis.call('ZRANGEBYSCORE', ledger, ARGV[14], ARGV[14])) do reconcile(entry) end
end

local members = {}
local step = 1

if mode == 'started' then
    members = redis.call('ZRANGEBYSCORE', wip, '-inf', now, 'LIMIT', tonumber(ARGV[15]), tonumber(ARGV[16]))
elseif mode == 'failed' then
    step = 2
    for i = 15, #ARGV do members[#members + 1] = ARGV[i] end
elseif mode == 'intermediate' or mode == 'reconcile' then
    for i = 15, #ARGV do members[#members + 1] = ARGV[i] end
else
    return redis.error_reply('unknown mode ' .. tostring(mode))
end
-- The work budget: a call stops after BUDGET_US microseconds of its own work (checked before each
-- member, so the longest call is the budget plus one job's work, itself bounded: no list scans) and
-- says "more"; the caller goes on with the next call. 4 ms keeps every call well under 10 ms, so RQ's
-- workers and clients wait at most a few milliseconds behind rqmaint, while a call still handles
-- hundreds of jobs (about 10 us each).
local BUDGET_US = 4000
local t0 = redis.call('TIME')
local function elapsed_us()
    local t = redis.call('TIME')
    return (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + (tonumber(t[2]) - tonumber(t0[2]))
end
local scanned = 0
local more = false
for i = 1, #members, step do
    if scanned > 0 and elapsed_us() >= BUDGET_US then
        more = true
        break
    end
    scanned = scanned + 1
    local member = members[i]
    local expect = members[i + 1] or ''
    if mode == 'started' then
        local score = redis.call('ZSCORE', wip, member)
        local id, exec = split(member)
        if not score then
            emit('gone', member)
        elseif tonumber(score) > now then
            emit('not_due', member)
        elseif not valid_id(id) then
            emit('malformed', member)
        else
            local jkey = 'rq:job:' .. id
            local f = job_fields(jkey)
            local status = f[F_STATUS]
            if not status and redis.call('EXISTS', jkey) == 0 then
                emit('missing_job', id)
            elseif not requeueable_status(status) then
                emit('status', id, status or '')
            else
                local origin, why = origin_of(f[F_ORIGIN])
                local wname = false
                if exec ~= '' then wname = redis.call('HGET', 'rq:execution:' .. id .. ':' .. exec, 'worker_name') end
                if not wname or wname == '' then wname = f[F_WORKER] end
                local live, current = false, false
                if origin then live, current = live_worker(id, member, wname) end
                if not origin then
                    emit(why, id)
                elseif live then
                    emit('live_worker', id, wname)
                else
                    local busy, overdue = other_entries(id, member)
                    if busy then
                        emit('in_started', id)  -- another execution of it may still be running
                    else
                        local queued = queued_on('rq:queue:' .. origin, id, status)
                        if queued == nil then
                            emit('unverified', id)  -- marked queued on a huge queue: left, never pushed twice
                        else
                            for _, other in ipairs(overdue) do clear_execution(id, id .. ':' .. other, other, false, origin, false) end
                            clear_execution(id, member, exec, wname, origin, current)
                            if queued then
                                -- already back on its queue (someone requeued it and left the entry): never twice
                                emit('already_queued', id)
                            else
                                settle(id, jkey, origin, f)
                            end
                        end
                    end
                end
            end
        end
    elseif mode == 'intermediate' then
        local id = member
        local inter = 'rq:queue:' .. qname .. ':intermediate'
        local seen_key = inter .. ':first_seen:' .. id
        if not redis.call('LPOS', inter, id) then
            emit('gone', id)
        elseif not valid_id(id) then
            emit('malformed', id)
        else
            local in_started = redis.call('ZSCORE', wip, id) ~= false
            if not in_started then
                for _, exec in ipairs(redis.call('ZRANGE', 'rq:executions:' .. id, 0, -1)) do
                    if redis.call('ZSCORE', wip, id .. ':' .. exec) then in_started = true break end
                end
            end
            local seen = redis.call('GET', seen_key)
            local jkey = 'rq:job:' .. id
            if in_started then
                emit('in_started', id)
            elseif not seen then
                redis.call('SET', seen_key, tostring(now), 'NX', 'EX', 86400)  -- as RQ's IntermediateQueue
                emit('first_seen', id)
            elseif now - num_or(seen, now) <= stuck_after then
                emit('not_due', id)
            elseif redis.call('EXISTS', jkey) == 0 then
                emit('missing_job', id)
            else
                local f = job_fields(jkey)
                local status = f[F_STATUS]
                local origin, why = origin_of(f[F_ORIGIN])
                if not requeueable_status(status) then
                    emit('status', id, status or '')
                elseif not origin then
                    emit(why, id)
                elseif queued_on('rq:queue:' .. origin, id, status) == nil then
                    emit('unverified', id)
                elseif queued_on('rq:queue:' .. origin, id, status) then
                    redis.call('LREM', inter, 0, id)
                    redis.call('DEL', seen_key)
                    emit('already_queued', id)
                else
                    clear_execution(id, false, '', false, origin, false)
                    redis.call('LREM', inter, 0, id)
                    redis.call('DEL', seen_key)
                    settle(id, jkey, origin, f)
                end
            end
        end
    elseif mode == 'failed' then
        local id = member
        local fkey = 'rq:failed:' .. qname
        local jkey = 'rq:job:' .. id
        if not redis.call('ZSCORE', fkey, id) then
            emit('gone', id)
        elseif not valid_id(id) then
            emit('malformed', id)
        elseif redis.call('EXISTS', jkey) == 0 then
            emit('missing_job', id)
        elseif redis.call('HGET', jkey, 'status') ~= 'failed' then
            emit('gone', id)
        else
            local unchanged
            local kind = string.sub(expect, 1, 1)
            local value = string.sub(expect, 2)
            if kind == 's' then
                local newest = redis.call('XREVRANGE', 'rq:results:' .. id, '+', '-', 'COUNT', 1)
                unchanged = newest[1] ~= nil and newest[1][1] == value
            else
                unchanged = redis.call('HGET', jkey, 'exc_info') == value
            end
            local f = job_fields(jkey)
            local origin, why = origin_of(f[F_ORIGIN])
            local busy, overdue = false, {}
            if unchanged and origin then busy, overdue = other_entries(id, '') end
            if not unchanged then
                emit('gone', id)
            elseif not origin then
                emit(why, id)
            elseif busy then
                emit('in_started', id)  -- an execution of it may be running: not a failed job any more
            elseif queued_on('rq:queue:' .. origin, id, 'failed') == nil then
                emit('unverified', id)
            elseif queued_on('rq:queue:' .. origin, id, 'failed') then
                emit('already_queued', id)  -- queued and failed at once: left for reconciliation
            else
                redis.call('ZREM', fkey, id)
                for _, other in ipairs(overdue) do clear_execution(id, id .. ':' .. other, other, false, origin, false) end
                clear_execution(id, id, '', false, origin, false)
                settle(id, jkey, origin, f)
            end
        end
    elseif mode == 'reconcile' then
        reconcile(member)
    end
end
if requeued_n > 0 then
    -- the ledger is rqmaint's own short-term record: it must never outlive the re-check window
    redis.call('EXPIRE', 'rqmaint:requeued:' .. qname, LEDGER_TTL)
    emit('requeued', '', requeued_n)
end
if more then emit('more', '', 1) end
emit('scanned', '', scanned)
return cjson.encode(out)
