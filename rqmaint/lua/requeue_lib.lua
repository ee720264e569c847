-- requeue_lib.lua: the shared part of the requeue scripts. scripts.py prepends it to each mode's file
-- (requeue_started.lua, requeue_intermediate.lua, requeue_failed.lua, requeue_reconcile.lua); the
-- dry-run variant also gets "#!lua flags=no-writes" as its first line, so the server itself refuses
-- any write, and every write below goes through write(), which does nothing when ARGV[6] is "1".
--
-- KEYS[1] <prefix>:wip:<queue>                    the queue's started registry (routes the call in a
--                                                  Redis Cluster: every key shares the prefix's hash tag)
-- KEYS[2] <prefix>:queue:<queue>:intermediate     the queue's intermediate list
-- KEYS[3] <prefix>:failed:<queue>                 the queue's failed registry
-- KEYS[4] <own>requeued:<queue>                   the ledger: "<id>|<retries_left>" scored by call
-- KEYS[5] <own>calls:<queue>                      what each call wrote: "<call>|<outcome>|<id>|<detail>"
-- KEYS[6] <own>audit                              the audit trail (rqmaint.audit): one XADD per change
-- ARGV[1]  RQ's key prefix (keys.prefix(), "rq" by default): every RQ key is built from it
-- ARGV[2]  rqmaint's own prefix (keys.own_prefix(), "rqmaint:" by default)
-- ARGV[3]  the queue name whose registry the members come from
-- ARGV[4]  now, epoch seconds (Redis's clock, read once by the run)
-- ARGV[5]  enqueued_at to write, RQ's format (%Y-%m-%dT%H:%M:%S.%fZ)
-- ARGV[6]  "1": dry run, write nothing (outcomes are what a real call would have done)
-- ARGV[7]  "1" to push at the front of the queue (LPUSH), else "0" (RPUSH)
-- ARGV[8]  max requeues: a job abandoned more often than this is given up (moved to failed)
-- ARGV[9]  seconds to keep a job's abandonment counter (<own>abandons:<id>)
-- ARGV[10] give-up reason for exactly max+1 abandonments: base64(zlib(text)) for <prefix>:results:<id>
-- ARGV[11] the same reason as zlib(text), for the job hash's exc_info (RQ < 2.2 reads it there)
-- ARGV[12] give-up reason for more than max+1 abandonments (max was lowered): base64(zlib(text))
-- ARGV[13] the same, zlib(text)
-- ARGV[14] seconds an intermediate-list job must have been seen before it counts as stuck (60)
-- ARGV[15] this call's id (unique per run and call; a re-send of the same call carries the same id)
-- ARGV[16] this call's score (epoch seconds) in the ledger and the calls record
-- ARGV[17] a previous call's score, or "": that call's ledger entries are reconciled first
-- ARGV[18] the audit trail's run id (rqmaint.audit.run_id())
-- ARGV[19] the audit trail's "by": the rqmaint command (requeue-abandoned, watch, clean, worker)
-- ARGV[20] the audit stream's length cap (XADD MAXLEN ~), ARGV[21] its trim LIMIT per command
-- ARGV[22] the audit stream's age cap, seconds (XTRIM MINID ~ ... LIMIT, once per call that recorded)
-- ARGV[23..] the mode's own arguments (see each mode's header)
--
-- Returns one JSON object (cjson): {out = flat array of quadruples (outcome, job id or member,
-- detail, since), requeued = how many this call (and an earlier send of it) requeued, scanned = how
-- many members it looked at, more = true when the work budget ended it early, resent = how many
-- outcomes come from an earlier send of the same call whose reply was lost}. Outcomes are
-- rqmaint.requeue's Outcome values; "since" is the started deadline or the first sighting.
--
-- Every check that can fail (the TYPE of each key the job's writes touch, numbers that must parse)
-- runs before the job's first write, so a job is moved whole or not at all; a job with a key of the
-- wrong type is the outcome "wrong_type" (detail: the key) and the call goes on with the next job.
--
-- Audit: every requeue, give-up and repair is XADDed to KEYS[6] by the write that makes it (audit()),
-- after the job's checks, among the job's writes: the entry and the change are one atomic step, and
-- a dry run (write() is off) records nothing.

local RQ = ARGV[1] .. ':'
local OWN = ARGV[2]
local qname = ARGV[3]
local now = tonumber(ARGV[4])
local enqueued_at = ARGV[5]
local DRY = ARGV[6] == '1'
local at_front = ARGV[7] == '1'
local max_requeues = tonumber(ARGV[8])
local counter_ttl = tonumber(ARGV[9])
local exact_b64, exact_z, more_b64, more_z = ARGV[10], ARGV[11], ARGV[12], ARGV[13]
local stuck_after = tonumber(ARGV[14])
local call_id = ARGV[15]
local call_score = ARGV[16]
local previous_score = ARGV[17]
local audit_run, audit_by = ARGV[18], ARGV[19]
local audit_max, audit_limit, audit_age = tonumber(ARGV[20]), tonumber(ARGV[21]), tonumber(ARGV[22])
local MODE_ARGS = 23
local LEDGER_TTL = 900  -- seconds; rqmaint.requeue.runner.RECONCILE_WINDOW
local DEFAULT_FAILURE_TTL = 31536000

local WIP, INTER, FAILED, LEDGER, CALLS, AUDIT = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local QUEUES = RQ .. 'queues'

local function k_job(id) return RQ .. 'job:' .. id end
local function k_queue(name) return RQ .. 'queue:' .. name end
local function k_inter(name) return RQ .. 'queue:' .. name .. ':intermediate' end
local function k_seen(name, id) return k_inter(name) .. ':first_seen:' .. id end
local function k_wip(name) return RQ .. 'wip:' .. name end
local function k_failed(name) return RQ .. 'failed:' .. name end
local function k_scheduled(name) return RQ .. 'scheduled:' .. name end
local function k_exec(id, exec) return RQ .. 'execution:' .. id .. ':' .. exec end
local function k_execs(id) return RQ .. 'executions:' .. id end
local function k_worker(name) return RQ .. 'worker:' .. name end
local function k_results(id) return RQ .. 'results:' .. id end
local function k_deps(id) return RQ .. 'job:' .. id .. ':dependents', RQ .. 'job::' .. id .. ':dependencies' end
local function k_abandons(id) return OWN .. 'abandons:' .. id end

local out = {}
local requeued_n = 0
local moved = {}  -- the per-call set: ids this call settled or found queued (never handled twice)

local function emit(outcome, id, detail, since)
    out[#out + 1] = outcome
    out[#out + 1] = id
    out[#out + 1] = tostring(detail or '')
    out[#out + 1] = tostring(since or '')
end

-- Every write goes through here: nothing at all in a dry run (where the server refuses writes too).
local function write(...)
    if DRY then return false end
    return redis.call(...)
end

-- What this call wrote, for the runner to read back when the reply is lost (exact reports). Requeues
-- are not recorded here: the ledger holds them under the call's score already.
local recorded = false
local function record(outcome, id, detail)
    recorded = true
    write('ZADD', CALLS, call_score, call_id .. '|' .. outcome .. '|' .. id .. '|' .. tostring(detail or ''))
end

-- The audit trail: one entry per change, length-capped with a bounded trim (LIMIT); the age cap is
-- applied once per call by finish(). Fields: rqmaint.audit.FIELDS.
local audited = false
local function audit(action, id, detail)
    audited = true
    write('XADD', AUDIT, 'MAXLEN', '~', audit_max, 'LIMIT', audit_limit, '*', 'action', action,
        'queue', qname, 'job', id, 'detail', tostring(detail or ''), 'run', audit_run, 'by', audit_by)
end

-- Key types. A key that does not exist is fine for every use; shared keys are looked up once a call.
local type_cache = {}
local function key_type(key)
    return redis.call('TYPE', key)['ok']
end
local function is_type(key, wanted, shared)
    local t
    if shared then
        t = type_cache[key]
        if t == nil then
            t = key_type(key)
            type_cache[key] = t
        end
    else
        t = key_type(key)
    end
    return t == 'none' or t == wanted
end

-- A read that also checks its key's type: the reply, or nil and true when the key has the wrong type
-- (a read of a wrong-typed key errors; caught here, before the job's first write).
local function read(...)
    local r = redis.pcall(...)
    if type(r) == 'table' and r.err then return nil, true end
    return r, false
end

-- The first key of ``checks`` ({key, type, shared} triples) of the wrong type, or nil.
local function wrong_key(checks)
    for _, c in ipairs(checks) do
        if not is_type(c[1], c[2], c[3]) then return c[1] end
    end
    return nil
end

-- A started member: RQ >= 2.0 writes "<job_id>:<execution_id>" (execution ids have no colon), RQ 1.16
-- the plain job id, which before RQ 2.1 may itself contain colons ("tenant:42"). split() cuts at the
-- last colon; the caller takes the whole member as a plain id when that job does not exist and the
-- whole member's does (see requeue_started.lua), so no such job is ever dropped.
local function split(member)
    local pos = nil
    local from = 1
    while true do
        local p = string.find(member, ':', from, true)
        if not p then break end
        pos, from = p, p + 1
    end
    if not pos then return member, '' end
    return string.sub(member, 1, pos - 1), string.sub(member, pos + 1)
end

-- Job ids: RQ >= 2.8 allows [A-Za-z0-9_-], older releases also '.' and ':'. Nothing that could be
-- confused with rqmaint's own separators ('|') or is empty.
local function valid_id(id)
    return id ~= '' and string.find(id, '^[%w_%-%.:]+$') ~= nil and string.sub(id, -1) ~= ':'
end

-- A plain number field (ttl, failure_ttl, first_seen): garbage, NaN, infinities and absurd values
-- give the default, so no later command (EXPIRE, ZADD) can fail half-way through a job.
local function num_or(value, default)
    local n = tonumber(value)
    if n == nil or n ~= n or n >= 1e12 or n <= -1e12 then return default end
    return n
end

local function int_or(value, default)
    return math.floor(num_or(value, default))
end

-- The abandonment counter: absent (0), or an integer INCR accepts; false for anything else (another
-- type, or text that is not an integer).
local function counter_value(id)
    local raw, bad = read('GET', k_abandons(id))
    if bad then return false end
    if not raw then return 0 end
    local n = tonumber(raw)
    if n == nil or string.find(raw, '^%-?%d+$') == nil or n >= 1e15 or n <= -1e15 then return false end
    return n
end

-- At most this many of a job's executions (<prefix>:executions:<id>, one per run of the job) are read.
local EXECS_CAP = 100

-- Plain fields of a job hash read by this script, in one HMGET (F_* index it).
local JOB_FIELDS = {'status', 'origin', 'worker_name', 'ttl', 'retries_left', 'failure_ttl'}
local F_STATUS, F_ORIGIN, F_WORKER, F_TTL, F_RETRIES, F_FAILURE_TTL = 1, 2, 3, 4, 5, 6

local function job_fields(jkey)
    return redis.call('HMGET', jkey, unpack(JOB_FIELDS))
end

-- The first key a settle (requeue or give up) to ``origin`` writes with a type-bound command that has
-- the wrong type, or nil: the origin's queue list, intermediate list and failed registry (the counter
-- is checked by counter_value, the results stream by give_up_check; the dependency sets only get
-- EXPIRE/PERSIST, which work on any type). The same for every job of an origin, so looked up once a
-- call (this call's own writes only ever create these keys with their right types).
local settle_bad = {}  -- origin -> the bad key, or false
local function settle_key_bad(origin)
    local bad = settle_bad[origin]
    if bad == nil then
        bad = wrong_key({
            {k_queue(origin), 'list', true},
            {k_inter(origin), 'list', true},
            {k_failed(origin), 'zset', true},
        }) or false
        settle_bad[origin] = bad
    end
    return bad or nil
end

-- Giving up writes the results stream (XADD): its type, when this abandonment is past the limit.
local function give_up_check(id, count)
    if count + 1 > max_requeues and not is_type(k_results(id), 'stream', false) then return k_results(id) end
    return nil
end

-- The job's origin, or nil plus an outcome when it cannot be requeued there.
local function origin_of(origin)
    if not origin or origin == '' then return nil, 'no_origin' end
    if origin ~= qname and redis.call('SISMEMBER', QUEUES, k_queue(origin)) == 0 then
        return nil, 'unknown_origin'
    end
    return origin, nil
end

-- An origin whose "intermediate list" key is in fact another registered queue (a queue named
-- "<origin>:intermediate"): that list is never touched (it holds the other queue's jobs).
local inter_is_queue = {}
local function own_intermediate(origin)
    if inter_is_queue[origin] == nil then
        inter_is_queue[origin] = redis.call('SISMEMBER', QUEUES, k_inter(origin)) == 1
    end
    return not inter_is_queue[origin]
end

local inter_len = {}  -- origin -> LLEN of its intermediate list, read once per call
local function inter_length(origin)
    if inter_len[origin] == nil then inter_len[origin] = redis.call('LLEN', k_inter(origin)) end
    return inter_len[origin]
end
local function intermediate_nonempty(origin)
    return own_intermediate(origin) and inter_length(origin) > 0
end

-- Take ``id`` out of ``origin``'s intermediate list with bounded work: every copy when the list is
-- short (an intermediate list holds one entry per busy worker), else only a copy within INTER_SCAN
-- entries of the head, or the one the caller found itself (``found``): LREM 1 stops at it. A copy
-- further in is left to the intermediate mode, which finds the job queued and only removes the entry
-- ("already_queued").
local INTER_SCAN = 10000
local function remove_from_intermediate(origin, id, found)
    local key = k_inter(origin)
    if inter_length(origin) <= INTER_SCAN then
        write('LREM', key, 0, id)  -- every copy
    elseif found or redis.call('LPOS', key, id, 'MAXLEN', INTER_SCAN) then
        write('LREM', key, 1, id)
    end
end

-- Is a live worker busy with this job? Only a worker whose hash exists, carries no death mark and
-- says it works on this job (current_job, RQ <= 2.x; or its executions set, RQ 3.0) counts.
-- Returns live, and the worker's current_job (false when its hash is gone). Types checked before.
-- ``w``: the worker hash's death, current_job, state (HMGET: all nil when the hash is gone).
local function live_worker(id, member, wname, w)
    if not wname or wname == '' then return false, false end
    local wkey = k_worker(wname)
    local death, current, state = w[1], w[2], w[3]
    if death then return false, current end
    if current then return current == id, current end
    if state ~= 'busy' then return false, current end
    local execs = wkey .. ':executions'
    if redis.call('EXISTS', execs) == 0 then return true, current end  -- busy, can't tell with what
    return redis.call('SISMEMBER', execs, member) == 1, current
end

-- The job's other started entries in ``wip``, through its executions: true if one is still current
-- (its deadline ahead: that execution may be running), else the overdue ones to remove with it.
-- A third value true: the index has the wrong type (nothing read); a fourth: the index holds more
-- than EXECS_CAP executions (RQ adds one per run of the job: only hostile data gets there), which
-- are not all read (bounded work): the job is left alone and reported unverified.
local function other_entries(wip, id, member)
    local overdue = {}
    local execs, bad = read('ZRANGE', k_execs(id), 0, EXECS_CAP)
    if bad then return false, overdue, true end
    if #execs > EXECS_CAP then return false, overdue, false, true end  -- too many to check: left alone
    for _, exec in ipairs(execs) do
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
local function clear_execution(wip, id, member, exec, wname, origin, current)
    if member then write('ZREM', wip, member) end
    if exec ~= '' then
        write('DEL', k_exec(id, exec))
        write('ZREM', k_execs(id), exec)
    end
    if wname and wname ~= '' then
        local wkey = k_worker(wname)
        local t = type_cache[wkey .. ':executions']  -- checked (and cached) by the caller
        if exec ~= '' and t ~= nil and t ~= 'none' then write('SREM', wkey .. ':executions', id .. ':' .. exec) end
        if current == id then write('HDEL', wkey, 'current_job', 'current_job_working_time') end
    end
    if intermediate_nonempty(origin) then
        -- (a first_seen key of a job no longer in the list is left to expire, as RQ leaves it)
        remove_from_intermediate(origin, id)
        write('DEL', k_seen(origin, id))
    end
end

-- Leave the job exactly as a fresh enqueue would: status queued, fresh enqueued_at, start/end cleared,
-- the key persisted or given the job's own ttl, the queue registered, the id pushed once.
local registered = {}  -- origins already SADDed to <prefix>:queues by this call

local function requeue(id, jkey, origin, f)
    write('HSET', jkey, 'status', 'queued', 'enqueued_at', enqueued_at, 'started_at', '',
        'ended_at', '', 'worker_name', '', 'last_heartbeat', '')
    write('HDEL', jkey, 'exc_info')
    local deps1, deps2 = k_deps(id)
    local has_deps = redis.call('EXISTS', deps1, deps2) > 0  -- usually neither exists
    local ttl = int_or(f[F_TTL], -1)
    if ttl > 0 then
        write('EXPIRE', jkey, ttl)
        if has_deps then
            write('EXPIRE', deps1, ttl)
            write('EXPIRE', deps2, ttl)
        end
    else
        write('PERSIST', jkey)
        if has_deps then
            write('PERSIST', deps1)
            write('PERSIST', deps2)
        end
    end
    local qkey = k_queue(origin)
    write('ZADD', LEDGER, call_score, id .. '|' .. (f[F_RETRIES] or ''))
    if not registered[origin] then
        write('SADD', QUEUES, qkey)
        registered[origin] = true
    end
    if at_front then write('LPUSH', qkey, id) else write('RPUSH', qkey, id) end
end

-- Move the job to its origin's failed registry, as RQ's FailedJobRegistry.add does, with a reason
-- that says how often it was abandoned.
local function give_up(id, jkey, origin, count, f)
    local b64, z = exact_b64, exact_z
    if count > max_requeues + 1 then b64, z = more_b64, more_z end
    local failure_ttl = int_or(f[F_FAILURE_TTL], DEFAULT_FAILURE_TTL)
    local score = failure_ttl
    if failure_ttl >= 0 then score = math.floor(now) + failure_ttl end
    write('HSET', jkey, 'status', 'failed', 'exc_info', z)
    write('ZADD', k_failed(origin), score, id)
    local deps1, deps2 = k_deps(id)
    if failure_ttl > 0 then
        write('EXPIRE', jkey, failure_ttl)
        write('EXPIRE', deps1, failure_ttl)
        write('EXPIRE', deps2, failure_ttl)
    else
        write('PERSIST', jkey)
    end
    local rkey = k_results(id)
    write('XADD', rkey, 'MAXLEN', '~', 10, '*', 'type', 2, 'worker_name', '', 'exc_string', b64)
    if failure_ttl > 0 then write('EXPIRE', rkey, failure_ttl) end
end

-- Count this abandonment and requeue the job, or give it up past the limit. ``count`` is the
-- counter's value, checked (counter_value) before the job's first write.
-- ``source``: where the job was found (started, intermediate, failed), for the audit entry.
local function settle(id, jkey, origin, f, count, since, source)
    count = count + 1
    write('SET', k_abandons(id), count, 'EX', counter_ttl)  -- the INCR of the checked value
    moved[id] = true
    local where = 'from ' .. source .. ' to ' .. origin .. ', abandoned ' .. count .. 'x'
    if count > max_requeues then
        give_up(id, jkey, origin, count, f)
        emit('given_up', id, count, since)
        record('given_up', id, count)
        audit('give_up', id, where .. ' (max ' .. max_requeues .. ')')
    else
        requeue(id, jkey, origin, f)
        requeued_n = requeued_n + 1
        emit('requeued', id, count, since)
        recorded = true
        audit('requeue', id, where)
    end
end

local function requeueable_status(status)
    return status == 'started' or status == 'queued'
end

-- Is the id already on its queue list? Never a scan of the list for the jobs that make up an
-- abandonment (status "started"): O(1) evidence decides.
-- * Every path that pushes an id onto a queue list (RQ's enqueue, retry, requeue, dependents,
--   scheduler; rqmaint's requeue) writes status "queued" in the same MULTI/EXEC or script as the push
--   (RQ queue.py:1325-1390, job.py:1803-1826, registry.py:196-228), and a work horse writes "started"
--   only after LMOVE/LPOP took its copy off the list (worker base.py:1365-1386). So a job whose
--   status is "started" is not on its queue list.
-- * A second copy can only come from a lost race against RQ's lock-less cleanup, whose EXEC lands
--   after our push: each such push is in the ledger (KEYS[4]) and re-checked (reconcile mode).
-- * Within a call, the per-call set ``moved``; across calls the runner's own set of settled ids.
-- * A failed job (failed mode) is on its queue only after such a lost race: the ledger says so.
-- Only a job still marked "queued" (a crash between the dequeue and the work horse, or an id
-- enqueued again) is looked for in the list, within QUEUED_SCAN entries from either end; past that a
-- job still in its intermediate list counts as dequeued (LMOVE took the queued copy), any other is
-- "unknown" and left alone (outcome unverified), never pushed twice. That is the rare case; its cost
-- is bounded (two LPOS MAXLEN), whatever the backlog.
local QUEUED_SCAN = 10000
local function queued_on(origin, id, status, retries)
    if moved[id] then return true end
    if status == 'started' then return false end
    if status == 'failed' then return redis.call('ZSCORE', LEDGER, id .. '|' .. (retries or '')) ~= false end
    local qkey = k_queue(origin)
    local len = redis.call('LLEN', qkey)
    if len == 0 then return false end
    if len <= 2 * QUEUED_SCAN then return redis.call('LPOS', qkey, id) ~= false end
    if redis.call('LPOS', qkey, id, 'MAXLEN', QUEUED_SCAN) then return true end
    if redis.call('LPOS', qkey, id, 'RANK', -1, 'MAXLEN', QUEUED_SCAN) then return true end
    -- too long to tell: still in its intermediate list (within INTER_SCAN entries of its head) means
    -- LMOVE took the queued copy
    if own_intermediate(origin) and intermediate_nonempty(origin)
        and redis.call('LPOS', k_inter(origin), id, 'MAXLEN', INTER_SCAN) ~= false then
        return false
    end
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

-- Lost races. RQ's StartedJobRegistry.cleanup, run without the lock by `rq info` and
-- registry.count, reads the expired entries first and EXECs its transaction later; if our requeue
-- ran in between, its EXEC marks the requeued job failed (queued AND in the failed registry) or
-- retries it (pushing the id a second time, or scheduling it). Each ledger entry is re-checked:
-- queued and failed -> the failure record of the lost race is removed ("unfailed"); failed while a
-- worker already runs it, or started/finished/queued yet in the failed registry -> the stale entry is
-- removed ("stale_failed"); scheduled and queued -> "unscheduled"; retries_left changed and queued
-- twice -> the extra push is removed ("dedup").
local function restore_ttl(id, jkey)
    local ttl = int_or(redis.call('HGET', jkey, 'ttl'), -1)
    local d1, d2 = k_deps(id)
    if ttl > 0 then
        write('EXPIRE', jkey, ttl)
    else
        write('PERSIST', jkey)
        write('PERSIST', d1)
        write('PERSIST', d2)
    end
end

local function running(id, origin)
    local owip = k_wip(origin)
    if not is_type(owip, 'zset', true) then return true end  -- can't tell: leave the job alone
    if redis.call('ZSCORE', owip, id) then return true end
    local execs = redis.call('ZRANGE', k_execs(id), 0, EXECS_CAP)
    if #execs > EXECS_CAP then return true end  -- too many to check (bounded work): left alone
    for _, exec in ipairs(execs) do
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
    if not valid_id(id) then return end
    local jkey = k_job(id)
    local f, bad_f = read('HMGET', jkey, 'status', 'retries_left', 'origin')
    if bad_f then
        emit('wrong_type', id, jkey)
        return
    end
    local status, retries_now = f[1], f[2] or ''
    local origin = f[3]
    if not origin or origin == '' then origin = qname end
    local own_queue = k_queue(origin)
    local fkey, skey = k_failed(origin), k_scheduled(origin)
    local bad = wrong_key({{own_queue, 'list', true}, {fkey, 'zset', true}, {skey, 'zset', true}})
    if bad then
        emit('wrong_type', id, bad)
        return
    end
    -- The common case, two reads: still queued with the same retries_left and not in the failed
    -- registry. A lost race's EXEC writes status failed (failure path) or scheduled, or changes
    -- retries_left (retry path); a worker that took the job since wrote started/finished/failed.
    if status == 'queued' and retries_now == retries_then and not redis.call('ZSCORE', fkey, id) then return end
    if not is_type(k_execs(id), 'zset', false) then
        emit('wrong_type', id, k_execs(id))
        return
    end
    local actions = {}
    local queued_times, in_tail = nil, 0
    local function in_queue()  -- a lower bound on a long list: a repair is only made on what was seen
        if queued_times == nil then queued_times, in_tail = copies_on(own_queue, id) end
        return queued_times
    end
    if redis.call('ZSCORE', fkey, id) then
        if status == 'failed' then
            if in_queue() >= 1 then
                -- queued and failed at once: the failure is a lost race's; the queue entry wins
                write('ZREM', fkey, id)
                write('HSET', jkey, 'status', 'queued', 'started_at', '', 'ended_at', '')
                restore_ttl(id, jkey)
                actions[#actions + 1] = 'unfailed'
            elseif running(id, origin) then
                write('ZREM', fkey, id)  -- a worker runs it: its outcome will be recorded
                actions[#actions + 1] = 'stale_failed'
            end
            -- else: not queued, not running: a genuine later failure; left as RQ recorded it
        elseif status == 'started' or status == 'finished' or status == 'queued' then
            write('ZREM', fkey, id)  -- a worker took it after the lost race: stale entry
            actions[#actions + 1] = 'stale_failed'
        end
    end
    if status == 'scheduled' and redis.call('ZSCORE', skey, id) and in_queue() >= 1 then
        write('ZREM', skey, id)
        write('HSET', jkey, 'status', 'queued')
        actions[#actions + 1] = 'unscheduled'
    end
    if retries_now ~= retries_then and in_queue() > 1 and in_tail > 0 then
        -- from the tail, and no more copies than the tail part holds: the LREM stops within it
        write('LREM', own_queue, -math.min(queued_times - 1, in_tail), id)
        actions[#actions + 1] = 'dedup'
    end
    if #actions > 0 then
        local what = table.concat(actions, '+')
        emit('reconciled', id, what)
        record('reconciled', id, what)
        audit('repair', id, what)
    end
end

-- The work budget: a call stops after BUDGET_US microseconds (checked every 4th member, so the
-- longest call is the budget plus four jobs' work, each bounded: no list scans) or after MAX_MEMBERS
-- members, whichever comes first, and says "more"; the caller goes on with the next call. 4 ms keeps
-- every call well under 10 ms, so RQ's workers and clients wait at most a few milliseconds behind
-- rqmaint, while a call still handles about a hundred jobs. The clock: TIME, the wall clock, where it
-- advances inside a script (Redis >= 7); Valkey freezes TIME at the call's start (the first check
-- sees it unmoved), and there the budget is CPU_BUDGET_US of the server's CPU time (os.clock(), which
-- Valkey's sandbox has). CPU time stops while the server waits for a CPU, so on a busy host a call
-- lasts longer than its CPU time (4 ms of CPU was seen taking 14 ms on a loaded 2-core machine): hence
-- the smaller figure. MAX_MEMBERS bounds the call whatever the clocks do.
local BUDGET_US = 4000
local CPU_BUDGET_US = 2000
local MAX_MEMBERS = 400
local cpu_clock = nil
do
    local ok, fn = pcall(function() return os.clock end)
    if ok and type(fn) == 'function' then cpu_clock = fn end
end
local c0 = cpu_clock and cpu_clock() or 0
local t0 = redis.call('TIME')
local time_frozen = false
local budget_checks = 0
local function over_budget()
    budget_checks = budget_checks + 1
    if budget_checks >= MAX_MEMBERS then return true end
    if budget_checks % 4 ~= 0 then return false end  -- the clocks are read every 4th member
    if not time_frozen then
        local t = redis.call('TIME')
        local us = (tonumber(t[1]) - tonumber(t0[1])) * 1000000 + (tonumber(t[2]) - tonumber(t0[2]))
        if us > 0 then return us >= BUDGET_US end
        time_frozen = true  -- four jobs' work and not a microsecond: TIME does not move here
    end
    if cpu_clock then return (cpu_clock() - c0) * 1000000 >= CPU_BUDGET_US end
    return false
end

-- The start of every call: the keys every job of it touches must have their types (else nothing at
-- all is done and the queue is reported), then an earlier send of this very call (its reply was lost
-- and redis-py sent it again) is read back from the calls record, then the previous call's ledger
-- entries are reconciled.
local resent = 0
local resent_removed = 0  -- how many started entries the earlier send removed (requeued, given up, cleared)
local function begin(checks)
    local bad = wrong_key(checks)
    if not bad then bad = wrong_key({{LEDGER, 'zset', true}, {CALLS, 'zset', true}, {QUEUES, 'set', true}}) end
    if bad then
        emit('wrong_type', '', bad)
        return false
    end
    if not DRY then
        -- the earlier send's requeues: its ledger entries (scored by this call), unless reconciled
        for _, entry in ipairs(redis.call('ZRANGEBYSCORE', LEDGER, call_score, call_score)) do
            local id = string.match(entry, '^[^|]*')
            if not moved[id] then
                resent = resent + 1
                resent_removed = resent_removed + 1
                moved[id] = true
                requeued_n = requeued_n + 1
                emit('requeued', id, '')
            end
        end
        local head = call_id .. '|'
        for _, m in ipairs(redis.call('ZRANGEBYSCORE', CALLS, call_score, call_score)) do
            if string.sub(m, 1, #head) == head then
                local rest = string.sub(m, #head + 1)
                local a = string.find(rest, '|', 1, true)
                local b = string.find(rest, '|', a + 1, true)
                local outcome, id, detail = string.sub(rest, 1, a - 1), string.sub(rest, a + 1, b - 1), string.sub(rest, b + 1)
                resent = resent + 1
                moved[id] = true
                if outcome ~= 'reconciled' then resent_removed = resent_removed + 1 end
                emit(outcome, id, detail)
            end
        end
    end
    if previous_score ~= '' then
        for _, entry in ipairs(redis.call('ZRANGEBYSCORE', LEDGER, previous_score, previous_score)) do
            reconcile(entry)
        end
    end
    return true
end

local function finish(scanned, more)
    if recorded then
        -- rqmaint's own short-term records: they never outlive the re-check window
        write('EXPIRE', LEDGER, LEDGER_TTL)
        write('EXPIRE', CALLS, LEDGER_TTL)
    end
    if audited then
        -- the age cap: entries older than audit_age go (whole stream nodes, at most audit_limit)
        local minid = string.format('%d-0', math.max(0, math.floor((now - audit_age) * 1000)))
        write('XTRIM', AUDIT, 'MINID', '~', minid, 'LIMIT', audit_limit)
    end
    return cjson.encode({out = out, requeued = requeued_n, scanned = scanned, more = more, resent = resent})
end
