//! The Lua scripts that keep limit counters in Redis. Each check is one
//! script call (one round trip), atomic on the server: the same rules as
//! [`super::algorithm`], with times in microseconds (Lua numbers are
//! doubles; microseconds since the epoch stay exact in them).
//!
//! Every key of one call shares a hash tag, so in a Redis Cluster they live
//! in one slot and the script may touch them all.

use std::sync::LazyLock;

/// Checks one request against several limits; counts it in all of them
/// only when all admit it.
///
/// `KEYS[i]`: the counter of limit `i`. `ARGV[1]`: now (µs); then four
/// numbers per limit: algorithm (1 token bucket, 2 sliding window, 3 fixed
/// window), limit, window (µs), burst.
///
/// Returns `{admitted, then per limit: allowed, remaining, reset µs, retry µs}`.
pub static RATE_LIMIT: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local now = tonumber(ARGV[1])
local out = {1}
local writes = {}
for i = 1, #KEYS do
  local at = 1 + (i - 1) * 4
  local algo = tonumber(ARGV[at + 1])
  local limit = tonumber(ARGV[at + 2])
  local window = tonumber(ARGV[at + 3])
  local burst = tonumber(ARGV[at + 4])
  local allowed, remaining, reset, retry = 0, 0, 0, 0
  if algo == 1 then
    local t = window / limit
    local tau = t * burst
    local tat = tonumber(redis.call('GET', KEYS[i]) or now)
    if tat < now then tat = now end
    local nxt = tat + t
    if nxt - now <= tau + 0.5 then
      allowed = 1
      remaining = math.floor((tau - (nxt - now)) / t + 0.000001)
      if remaining < 0 then remaining = 0 end
      reset = nxt - now
      writes[i] = {'tat', nxt, math.ceil((nxt - now) / 1000) + 1}
    else
      reset = tat - now
      retry = nxt - now - tau
    end
  else
    local index = math.floor(now / window)
    local h = redis.call('HMGET', KEYS[i], 'i', 'c', 'p')
    local stored = tonumber(h[1])
    local curr = tonumber(h[2]) or 0
    local prev = tonumber(h[3]) or 0
    if stored ~= index then
      if stored == index - 1 then prev = curr else prev = 0 end
      curr = 0
    end
    local elapsed = now - index * window
    local to_end = window - elapsed
    if algo == 3 then
      prev = 0
      reset = to_end
      if curr < limit then
        allowed = 1
        remaining = limit - curr - 1
      else
        retry = to_end
      end
    else
      local weighted = prev * (window - elapsed)
      if weighted + (curr + 1) * window <= limit * window then
        allowed = 1
        remaining = math.floor((limit * window - weighted - (curr + 1) * window) / window)
        reset = to_end
      else
        local wait
        if curr < limit then
          wait = window - math.floor((limit - curr - 1) * window / prev) - elapsed
          if wait < 0 then wait = 0 end
        else
          wait = to_end + window - math.floor((limit - 1) * window / curr)
        end
        if wait < 1 then wait = 1 end
        retry = wait
        reset = wait
      end
    end
    local ttl = math.ceil(to_end / 1000) + 1
    if algo == 2 then ttl = ttl + math.ceil(window / 1000) end
    writes[i] = {'win', index, curr, prev, ttl, allowed}
  end
  if allowed == 0 then out[1] = 0 end
  out[#out + 1] = allowed
  out[#out + 1] = remaining
  out[#out + 1] = math.ceil(reset)
  out[#out + 1] = math.ceil(retry)
end
for i = 1, #KEYS do
  local w = writes[i]
  if w ~= nil and w[1] == 'tat' and out[1] == 1 then
    redis.call('SET', KEYS[i], string.format('%.17g', w[2]), 'PX', w[3])
  elseif w ~= nil and w[1] == 'win' then
    local count = w[3]
    if out[1] == 1 then count = count + 1 end
    redis.call('HSET', KEYS[i], 'i', string.format('%.17g', w[2]),
      'c', string.format('%.17g', count), 'p', string.format('%.17g', w[4]))
    redis.call('PEXPIRE', KEYS[i], w[5])
  end
end
return out
"#,
    )
});

/// Counts one request against a quota period, unless it is used up.
///
/// `KEYS[1]`: the period's counter. `ARGV`: limit, the period's end (UNIX
/// seconds; the key expires a day later).
///
/// Returns `{admitted, used}`.
pub static QUOTA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local limit = tonumber(ARGV[1])
local used = tonumber(redis.call('GET', KEYS[1]) or 0)
if used >= limit then
  return {0, used}
end
used = redis.call('INCR', KEYS[1])
if used == 1 then
  redis.call('EXPIREAT', KEYS[1], tonumber(ARGV[2]) + 86400)
end
return {1, used}
"#,
    )
});
