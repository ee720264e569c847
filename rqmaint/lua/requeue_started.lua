-- requeue_started.lua: abandoned entries of the queue's started registry (KEYS[1]) back on their
-- queue, atomically per job; every job's state is re-checked here (the runner only says where to
-- look). Appended to requeue_lib.lua (KEYS, ARGV[1..22], return value: see there).
--
-- ARGV[23] "range": ARGV[24] offset, ARGV[25] limit: the script takes the due members itself
--          (ZRANGEBYSCORE KEYS[1] -inf now LIMIT offset limit);
--          "members": ARGV[24..] the members to look at (one job's entries, for explain).
--
-- Touches  KEYS[1] (ZREM), <prefix>:job:<id> (+ :dependents, <prefix>:job::<id>:dependencies),
--          <prefix>:queue:<origin>, <prefix>:queues, <prefix>:queue:<origin>:intermediate
--          (+ :first_seen:<id>), <prefix>:execution:<id>:<exec>, <prefix>:executions:<id>,
--          <prefix>:worker:<w> (HDEL current_job only, never creating it), <prefix>:worker:<w>:executions
--          (SREM), <prefix>:failed:<origin> and <prefix>:results:<id> (give up), <own>abandons:<id>,
--          KEYS[4], KEYS[5], KEYS[6] (audit).
-- Outcomes requeued, given_up, already_queued, gone, not_due, live_worker, in_started, missing_job,
--          no_origin, unknown_origin, malformed, status (detail: the status), unverified, wrong_type.

-- members[i], scores[i]: the range's members come with their scores (read by this very script, so
-- they are current: nothing else runs while it does); an explicit member's score is read here.
local members, scores = {}, {}
if not begin({{WIP, 'zset', true}}) then return finish(0, false) end
if ARGV[MODE_ARGS] == 'range' then
    local limit = tonumber(ARGV[MODE_ARGS + 2]) - resent_removed
    if limit > 0 then
        local rows = redis.call('ZRANGEBYSCORE', WIP, '-inf', now, 'WITHSCORES', 'LIMIT',
            tonumber(ARGV[MODE_ARGS + 1]), limit)
        for i = 1, #rows, 2 do
            members[#members + 1] = rows[i]
            scores[#scores + 1] = rows[i + 1]
        end
    end
else
    for i = MODE_ARGS + 1, #ARGV do
        members[#members + 1] = ARGV[i]
        scores[#scores + 1] = redis.call('ZSCORE', WIP, ARGV[i])
    end
end

local scanned = 0
local more = false
for i, member in ipairs(members) do
    if scanned > 0 and over_budget() then
        more = true
        break
    end
    scanned = scanned + 1
    -- (an entry this call removed since the read is another entry of a job it settled: moved[id])
    local score = scores[i]
    local id, exec = split(member)
    if not score then
        emit('gone', member)
    elseif tonumber(score) > now then
        emit('not_due', member, '', score)
    else
        -- Reads first, each checking its key's type (read()); then the write-only keys' types; the
        -- first write comes after all of them.
        local jkey = k_job(id)
        local f, bad_f = read('HMGET', jkey, unpack(JOB_FIELDS))
        local bad = bad_f and jkey or nil
        if not bad and not f[F_STATUS] and exec ~= '' and redis.call('EXISTS', jkey) == 0
            and redis.call('EXISTS', k_job(member)) == 1 then
            -- RQ 1.16's plain member of an id with a colon ("tenant:42"): that job, not "tenant"
            id, exec, jkey = member, '', k_job(member)
            f, bad_f = read('HMGET', jkey, unpack(JOB_FIELDS))
            if bad_f then bad = jkey end
        end
        local status = f and f[F_STATUS]
        if not valid_id(id) then
            emit('malformed', member, '', score)
        elseif moved[id] then
            -- another entry of a job this call already settled or found queued: removed with its
            -- execution keys (DEL works on any type; the index is ZREMed only when it is a zset)
            write('ZREM', WIP, member)
            if exec ~= '' then
                write('DEL', k_exec(id, exec))
                if is_type(k_execs(id), 'zset', false) then write('ZREM', k_execs(id), exec) end
            end
        elseif bad then
            emit('wrong_type', id, bad, score)
        elseif not status and redis.call('EXISTS', jkey) == 0 then
            emit('missing_job', id, '', score)
        elseif not requeueable_status(status) then
            emit('status', id, status or '', score)
        else
            local origin, why = origin_of(f[F_ORIGIN])
            local wname = false
            if origin and exec ~= '' then
                local w, bad_w = read('HGET', k_exec(id, exec), 'worker_name')
                if bad_w then bad = k_exec(id, exec) else wname = w end
            end
            if not wname or wname == '' then wname = f[F_WORKER] end
            local wfields = {}
            if origin and not bad and wname and wname ~= '' then
                local w, bad_w = read('HMGET', k_worker(wname), 'death', 'current_job', 'state')
                if bad_w then
                    bad = k_worker(wname)
                else
                    wfields = w
                    local needs_set = exec ~= '' or (not w[1] and not w[2] and w[3] == 'busy')
                    if needs_set and not is_type(k_worker(wname) .. ':executions', 'set', true) then
                        bad = k_worker(wname) .. ':executions'
                    end
                end
            end
            local busy, overdue, too_many = false, {}, false
            if origin and not bad then
                local bad_x
                busy, overdue, bad_x, too_many = other_entries(WIP, id, member)
                if bad_x then bad = k_execs(id) end
            end
            if origin and not bad then bad = settle_key_bad(origin) end
            local count = 0
            if origin and not bad then
                count = counter_value(id)
                if count == false then bad = k_abandons(id) else bad = give_up_check(id, count) end
            end
            local live, current = false, false
            if origin and not bad then live, current = live_worker(id, member, wname, wfields) end
            if not origin then
                emit(why, id, '', score)
            elseif bad then
                emit('wrong_type', id, bad, score)
            elseif live then
                emit('live_worker', id, wname, score)
            elseif busy then
                emit('in_started', id, '', score)  -- another execution of it may still be running
            elseif too_many then
                emit('unverified', id, '', score)  -- executions past EXECS_CAP: not all checked, left
            else
                local queued = queued_on(origin, id, status, f[F_RETRIES])
                if queued == nil then
                    emit('unverified', id, '', score)  -- marked queued on a huge queue: left, never pushed twice
                else
                    -- the first write of this job: every check is behind us
                    for _, other in ipairs(overdue) do
                        clear_execution(WIP, id, id .. ':' .. other, other, false, origin, false)
                    end
                    clear_execution(WIP, id, member, exec, wname, origin, current)
                    if queued then
                        -- already back on its queue (someone requeued it and left the entry): never twice
                        moved[id] = true
                        emit('already_queued', id, '', score)
                        record('already_queued', id, '')
                        audit('repair', id, 'already queued: its started entry removed')
                    else
                        settle(id, jkey, origin, f, count, score, 'started')
                    end
                end
            end
        end
    end
end
-- an earlier send of this call already removed resent_removed of the window's members: they count as
-- looked at, so the runner does not take a short window for the end of the registry
return finish(scanned + resent_removed, more)
