-- requeue_reconcile.lua: re-check ledger entries (KEYS[4]) of recent requeues and repair what a lost
-- race against RQ's lock-less cleanup broke (see "Lost races" in requeue_lib.lua). Appended to
-- requeue_lib.lua (KEYS, ARGV[1..22], return value: see there).
--
-- ARGV[23..] ledger entries "<id>|<retries_left>" to check (read by the runner in bounded chunks)
--
-- Touches  <prefix>:job:<id> (status, TTL), <prefix>:failed:<origin>, <prefix>:scheduled:<origin>
--          (ZREM), <prefix>:queue:<origin> (LREM of an extra copy, from the tail), KEYS[5].
-- Outcomes reconciled (detail: unfailed, stale_failed, unscheduled, dedup joined by "+"), wrong_type.

if not begin({}) then return finish(0, false) end

local scanned = 0
local more = false
for i = MODE_ARGS, #ARGV do
    if scanned > 0 and over_budget() then
        more = true
        break
    end
    scanned = scanned + 1
    local id = string.match(ARGV[i], '^[^|]*')
    if not moved[id] then reconcile(ARGV[i]) end
end
return finish(scanned, more)
