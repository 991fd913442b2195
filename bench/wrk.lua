-- wrk script for bench/run.sh. BENCH_MODE:
--   fixed  (default) the request as given on the command line (-H headers)
--   tokens a random bulk-loaded session token "bench-<1..BENCH_SESSIONS>" per request
--   login  POST /api/auth/local for one of 1000 users (each response is a new session)
-- Prints one line "RESULT requests rps p50_us p99_us p999_us errors" at the end.
local mode = os.getenv("BENCH_MODE") or "fixed"
local sessions = tonumber(os.getenv("BENCH_SESSIONS") or "10000")

request = function()
  if mode == "tokens" then
    return wrk.format("GET", "/api/articles", { ["Authorization"] = "Bearer bench-" .. math.random(1, sessions) })
  elseif mode == "login" then
    local body = '{"identifier":"user' .. math.random(1, 1000) .. '","password":"x"}'
    return wrk.format("POST", "/api/auth/local", { ["Content-Type"] = "application/json" }, body)
  end
  return wrk.format()
end

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %.1f %d %d %d %d\n",
    summary.requests, summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99), latency:percentile(99.9),
    e.connect + e.read + e.write + e.timeout + e.status))
end
