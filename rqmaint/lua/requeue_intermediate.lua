-- requeue_intermediate.lua: jobs stuck in the queue's intermediate list (KEYS[2]) -- dequeued by a
-- worker (LMOVE) that died before its work horse started them -- back on their queue, as RQ's
-- IntermediateQueue.cleanup would fail them: first sighting marked (first_seen, as RQ does), stuck
-- after ARGV[14] seconds. Appended to requeue_lib.lua (KEYS, ARGV[1..22], return value: see there).
--
-- ARGV[23]   the window: the runner read the ids from the list's first ARGV[23] entries. Entries only
--            ever leave the list or are appended behind (RQ's LMOVE pushes at the tail), so an id
--            still in the list is within that window: each is re-checked with LPOS MAXLEN window
--            (bounded work, however long the list).
-- ARGV[24..] the ids.
--
-- Touches  KEYS[2] (LREM), <prefix>:queue:<queue>:intermediate:first_seen:<id> (SET NX EX, DEL), the
--          job's keys as requeue_started.lua does, KEYS[4], KEYS[5], KEYS[6] (audit).
-- Outcomes requeued, given_up, already_queued, first_seen, not_due, gone, in_started, missing_job,
--          no_origin, unknown_origin, malformed, status, unverified, wrong_type, name_collision (a
--          queue named "<queue>:intermediate" exists: its list is that queue's, never touched).

if not begin({{WIP, 'zset', true}, {INTER, 'list', true}}) then return finish(0, false) end
if not own_intermediate(qname) then
    emit('name_collision', '', INTER)
    return finish(0, false)
end

local scanned = 0
local more = false
local window = math.max(1, int_or(ARGV[MODE_ARGS], 1))
for i = MODE_ARGS + 1, #ARGV do
    if scanned > 0 and over_budget() then
        more = true
        break
    end
    scanned = scanned + 1
    local id = ARGV[i]
    local seen_key = k_seen(qname, id)
    local jkey = k_job(id)
    if moved[id] or not redis.call('LPOS', INTER, id, 'MAXLEN', window) then
        emit('gone', id)
    elseif not valid_id(id) then
        emit('malformed', id)
    else
        local bad = wrong_key({{jkey, 'hash', false}, {k_execs(id), 'zset', false}, {seen_key, 'string', false}})
        local in_started = false
        if not bad then
            -- started in this queue, or in the job's origin when that is another queue (a job is
            -- pushed to its origin: one started under a live worker there must never be pushed again)
            local wips = {WIP}
            local o = redis.call('HGET', jkey, 'origin')
            if o and o ~= '' and o ~= qname then
                local other = k_wip(o)
                if is_type(other, 'zset', true) then wips[2] = other else bad = other end
            end
            for _, w in ipairs(wips) do
                if bad or in_started then break end
                -- (a member "<id>:" with an empty execution id is the job too: requeue_started.lua)
                in_started = redis.call('ZSCORE', w, id) ~= false or redis.call('ZSCORE', w, id .. ':') ~= false
                if not in_started then
                    local execs = redis.call('ZRANGE', k_execs(id), 0, EXECS_CAP)
                    -- (past EXECS_CAP executions: not all checked, so taken as started: left alone)
                    in_started = #execs > EXECS_CAP
                    for _, exec in ipairs(execs) do
                        if in_started then break end
                        if redis.call('ZSCORE', w, id .. ':' .. exec) then in_started = true end
                    end
                end
            end
        end
        local seen = (not bad) and redis.call('GET', seen_key)
        if bad then
            emit('wrong_type', id, bad)
        elseif in_started then
            emit('in_started', id)
        elseif not seen then
            write('SET', seen_key, tostring(now), 'NX', 'EX', 86400)  -- as RQ's IntermediateQueue
            emit('first_seen', id, '', now)
        elseif now - num_or(seen, now) <= stuck_after then
            emit('not_due', id, '', seen)
        elseif redis.call('EXISTS', jkey) == 0 then
            emit('missing_job', id, '', seen)
        else
            local f = job_fields(jkey)
            local status = f[F_STATUS]
            local origin, why = origin_of(f[F_ORIGIN])
            if origin then bad = settle_key_bad(origin) end
            local count = 0
            if origin and not bad then
                count = counter_value(id)
                if count == false then bad = k_abandons(id) end
            end
            local queued = false
            if requeueable_status(status) and origin and not bad then
                queued = queued_on(origin, id, status, f[F_RETRIES])
            end
            if not requeueable_status(status) then
                emit('status', id, status or '', seen)
            elseif not origin then
                emit(why, id, '', seen)
            elseif bad then
                emit('wrong_type', id, bad, seen)
            elseif queued == nil then
                emit('unverified', id, '', seen)
            else
                -- the first write of this job: every check is behind us. Every copy of the id goes, or
                -- on a huge list the one LPOS found.
                remove_from_intermediate(qname, id, true)
                write('DEL', seen_key)
                if queued then
                    moved[id] = true
                    emit('already_queued', id, '', seen)
                    record('already_queued', id, '')
                    audit('repair', id, 'already queued: its intermediate entry removed')
                else
                    clear_execution(WIP, id, false, '', false, origin, false)
                    settle(id, jkey, origin, f, count, seen, 'intermediate')
                end
            end
        end
    end
end
return finish(scanned, more)
