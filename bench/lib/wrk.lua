-- bench/lib/wrk.lua - the wrk script of bench/workloads, bench/scale and bench/profile.
--
-- Like the shared harness's req.lua (Host and Cookie from BENCH_HOST and
-- BENCH_COOKIE, one "BENCHJSON {...}" line at the end, which the shared
-- benchlib.py measure parses), plus, from the environment:
--   BENCH_CLOSE=1          send "Connection: close": a new connection per request
--   BENCH_METHOD=POST      request method
--   BENCH_BODY_BYTES=N     a request body of N bytes (Content-Length)
--   BENCH_HOSTS_N=N        each request is one of N pre-formatted requests, picked at
--   BENCH_HOSTS_FIRST=K    random: i in [K, K+N), path "/q<i>", Host "r<i>.scale.local"
--   BENCH_HOSTS_MOD=M      (per-request Lua, so compare runs that both use it); with M,
--                          Host "r<K + (i-K) mod M>.scale.local": N distinct requests
--                          over M hosts, so wrk's own work is that of N hosts
--   BENCH_STOP_AFTER=N     each wrk thread stops after N responses (a fixed count;
--                          wrk itself still runs for its -d, idle after that)
--   BENCH_HEADER="N: v"    one more request header (bench/persistence's header mode)
-- Without BENCH_HOSTS_N and BENCH_STOP_AFTER it defines no request() or
-- response() function, so wrk keeps its pre-formatted fast path.

local host = os.getenv("BENCH_HOST")
local cookie = os.getenv("BENCH_COOKIE")
if host and host ~= "" then wrk.headers["Host"] = host end
if cookie and cookie ~= "" then wrk.headers["Cookie"] = cookie end
if os.getenv("BENCH_CLOSE") == "1" then wrk.headers["Connection"] = "close" end
local extra = os.getenv("BENCH_HEADER")
if extra and extra ~= "" then
   local name, value = extra:match("^([^:]+):%s*(.*)$")
   if name then wrk.headers[name] = value end
end
local method = os.getenv("BENCH_METHOD")
if method and method ~= "" then wrk.method = method end
local body_bytes = tonumber(os.getenv("BENCH_BODY_BYTES") or "0")
if body_bytes > 0 then
   wrk.body = string.rep("x", body_bytes)
   wrk.headers["Content-Type"] = "application/octet-stream"
end

local hosts_n = tonumber(os.getenv("BENCH_HOSTS_N") or "0")
local hosts_first = tonumber(os.getenv("BENCH_HOSTS_FIRST") or "0")
local hosts_mod = tonumber(os.getenv("BENCH_HOSTS_MOD") or "0")
if hosts_n > 0 then
   local reqs = {}
   function init(args)
      math.randomseed(os.time() + math.floor(os.clock() * 1e6))
      for i = 1, hosts_n do
         local h = wrk.headers
         local host_i = i - 1
         if hosts_mod > 0 then host_i = host_i % hosts_mod end
         h["Host"] = string.format("r%d.scale.local", hosts_first + host_i)
         reqs[i] = wrk.format(nil, string.format("/q%d", hosts_first + i - 1), h)
      end
   end
   function request()
      return reqs[math.random(hosts_n)]
   end
end

local stop_after = tonumber(os.getenv("BENCH_STOP_AFTER") or "0")
if stop_after > 0 then
   local seen = 0
   function response(status, headers, body)
      seen = seen + 1
      if seen >= stop_after then wrk.thread:stop() end
   end
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
      '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
      '"lat_mean_us":%.1f,"lat_p50_us":%d,"lat_p90_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency.mean, latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max))
end
