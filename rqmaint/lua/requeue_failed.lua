-- requeue_failed.lua: jobs that RQ's own maintenance moved to the queue's failed registry (KEYS[3])
-- because they were abandoned (AbandonedJobError), or whose work horse was SIGKILLed while its worker
-- lived (an OOM kill), back on their queue -- never a job that raised. The runner recognises the
-- failure record; this script takes the job only if that record is unchanged. Appended to
-- requeue_lib.lua (KEYS, ARGV[1..22], return value: see there).
--
-- ARGV[23] "scan": ARGV[24] ZSCAN cursor, ARGV[25] COUNT: the script walks one ZSCAN step of
--          KEYS[3] itself and returns (a RESP array, not JSON: the records are binary) the next
--          cursor, then for each member whose status is failed and whose newest failure record may
--          be an abandonment: id, kind ("s": results stream, "h": exc_info), the stream entry id
--          (kind "s"), the record. The runner decompresses and recognises the text (Lua has no zlib).
--          "May be": RQ's two texts are short and fixed ("Moved to FailedJobRegistry, due to
--          AbandonedJobError, at <time>", written with worker_name '' and no execution; "Work-horse
--          terminated unexpectedly; waitpid returned <n> (signal <s>); ", under 90 characters), so a
--          longer record -- a traceback -- cannot be one. Writes nothing.
--          "take": ARGV[24..] pairs: id, expectation: the failure record the runner recognised, "s" ..
--          the newest results-stream entry id, or "h" .. the raw exc_info value.
--
-- Touches  KEYS[3] (ZREM), KEYS[1] (ZREM of the job's overdue entries), the job's keys as
--          requeue_started.lua does, KEYS[4], KEYS[5], KEYS[6] (audit).
-- Outcomes requeued, given_up, already_queued (queued and failed at once: a lost race, left to the
--          ledger's re-check), gone (the record changed or the entry went), in_started, missing_job,
--          no_origin, unknown_origin, malformed, wrong_type.

-- Record sizes that can hold one of RQ's two texts: zlib adds at most 11 bytes to a short text,
-- base64 a third. An AbandonedJobError record (stream entry without worker_name) may be longer.
local HORSE_B64, ABANDONED_B64, EXC_INFO = 160, 512, 160
if ARGV[MODE_ARGS] == 'scan' then
    if not is_type(FAILED, 'zset', true) then return {'0'} end
    local page = redis.call('ZSCAN', FAILED, ARGV[MODE_ARGS + 1], 'COUNT', tonumber(ARGV[MODE_ARGS + 2]))
    local reply = {page[1]}
    local members = page[2]
    for i = 1, #members, 2 do
        local id = members[i]
        local jkey = k_job(id)
        local status = read('HGET', jkey, 'status')
        if status == 'failed' then
            local newest = read('XREVRANGE', k_results(id), '+', '-', 'COUNT', 1)
            if newest and newest[1] then
                local fields = newest[1][2]
                local kind, record, worker = nil, nil, ''
                for j = 1, #fields, 2 do
                    if fields[j] == 'type' then kind = fields[j + 1] end
                    if fields[j] == 'exc_string' then record = fields[j + 1] end
                    if fields[j] == 'worker_name' then worker = fields[j + 1] end
                end
                local limit = HORSE_B64
                if worker == '' then limit = ABANDONED_B64 end
                if kind == '2' and record and #record <= limit then
                    reply[#reply + 1] = id
                    reply[#reply + 1] = 's'
                    reply[#reply + 1] = newest[1][1]
                    reply[#reply + 1] = record
                end
            elseif (read('HSTRLEN', jkey, 'exc_info') or EXC_INFO + 1) <= EXC_INFO then
                -- (its length first: a traceback's exc_info, kilobytes, is never copied into the script)
                local exc = read('HGET', jkey, 'exc_info')
                if exc then
                    reply[#reply + 1] = id
                    reply[#reply + 1] = 'h'
                    reply[#reply + 1] = ''
                    reply[#reply + 1] = exc
                end
            end
        end
    end
    return reply
end

if not begin({{WIP, 'zset', true}, {FAILED, 'zset', true}}) then return finish(0, false) end

local scanned = 0
local more = false
for i = MODE_ARGS + 1, #ARGV, 2 do
    if scanned > 0 and over_budget() then
        more = true
        break
    end
    scanned = scanned + 1
    local id = ARGV[i]
    local expect = ARGV[i + 1] or ''
    local jkey = k_job(id)
    local bad = nil
    if valid_id(id) then
        bad = wrong_key({{jkey, 'hash', false}, {k_execs(id), 'zset', false}, {k_results(id), 'stream', false}})
    end
    if moved[id] or not redis.call('ZSCORE', FAILED, id) then
        emit('gone', id)
    elseif not valid_id(id) then
        emit('malformed', id)
    elseif bad then
        emit('wrong_type', id, bad)
    elseif redis.call('EXISTS', jkey) == 0 then
        emit('missing_job', id)
    elseif redis.call('HGET', jkey, 'status') ~= 'failed' then
        emit('gone', id)
    else
        local unchanged
        local kind = string.sub(expect, 1, 1)
        local value = string.sub(expect, 2)
        if kind == 's' then
            local newest = redis.call('XREVRANGE', k_results(id), '+', '-', 'COUNT', 1)
            unchanged = newest[1] ~= nil and newest[1][1] == value
        else
            unchanged = redis.call('HGET', jkey, 'exc_info') == value
        end
        local f = job_fields(jkey)
        local origin, why = origin_of(f[F_ORIGIN])
        if unchanged and origin then bad = settle_key_bad(origin) end
        local count = 0
        if unchanged and origin and not bad then
            count = counter_value(id)
            if count == false then bad = k_abandons(id) end
        end
        local busy, overdue, too_many, bad_x = false, {}, false, false
        if unchanged and origin and not bad then busy, overdue, bad_x, too_many = other_entries(WIP, id, '') end
        if not unchanged then
            emit('gone', id)
        elseif not origin then
            emit(why, id)
        elseif bad then
            emit('wrong_type', id, bad)
        elseif busy then
            emit('in_started', id)  -- an execution of it may be running: not a failed job any more
        elseif too_many then
            emit('unverified', id)  -- executions past EXECS_CAP: not all checked, left alone
        elseif queued_on(origin, id, 'failed', f[F_RETRIES]) then
            emit('already_queued', id)  -- queued and failed at once: left for reconciliation
        else
            -- the first write of this job: every check is behind us
            write('ZREM', FAILED, id)
            for _, other in ipairs(overdue) do
                clear_execution(WIP, id, id .. ':' .. other, other, false, origin, false)
            end
            clear_execution(WIP, id, id, '', false, origin, false)
            settle(id, jkey, origin, f, count, '', 'failed')
        end
    end
end
return finish(scanned, more)
