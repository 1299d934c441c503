-- wrk script: a bearer token no request has sent before (a fresh prefix
-- per wrk run, then a counter), so every request misses the gateway's
-- introspection cache.
math.randomseed(os.time())
local prefix = "t" .. math.random(1, 1000000000) .. "-"
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/", { ["Authorization"] = "Bearer " .. prefix .. n })
end
