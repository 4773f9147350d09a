-- wrk script for bench/probe_bench.sh: rotates /probe?module=icmp&target=... across the peer's
-- addresses and checks every answer.
--
-- Per thread it counts answers that are not a successful probe (status != 200, or no
-- "probe_success 1" line) and sums the reported probe_icmp_duration_seconds{phase="rtt"} of
-- the successful ones. done() prints one machine-readable "MPB_RESULT key=value ..." line that
-- the driver script parses.
--
-- Environment (read in every thread's Lua state):
--   MPB_TARGETS   file with one IPv4 address per line (required)
--   MPB_MODULE    module name (default icmp)
--   MPB_SCRAPE_TIMEOUT  value for X-Prometheus-Scrape-Timeout-Seconds (default: header not sent)

local threads = {}
local nthreads = 0

local function load_targets()
  local path = os.getenv("MPB_TARGETS")
  assert(path, "MPB_TARGETS is not set")
  local t = {}
  for line in io.lines(path) do
    if line:match("%S") then t[#t + 1] = line:match("^%s*(.-)%s*$") end
  end
  assert(#t > 0, "no targets in " .. path)
  return t
end

function setup(thread)
  nthreads = nthreads + 1
  thread:set("tid", nthreads)
  table.insert(threads, thread)
end

function init(args)
  targets = load_targets()
  module = os.getenv("MPB_MODULE") or "icmp"
  local st = os.getenv("MPB_SCRAPE_TIMEOUT")
  headers = {}
  if st and st ~= "" then headers["X-Prometheus-Scrape-Timeout-Seconds"] = st end
  -- threads start at different offsets so that they do not hit the same address in lockstep
  idx = ((tid or 1) - 1) * 499
  ok = 0
  failed = 0
  failed_status = 0
  rtt_sum = 0.0
  rtt_n = 0
end

function request()
  idx = idx + 1
  local target = targets[(idx % #targets) + 1]
  return wrk.format("GET", "/probe?module=" .. module .. "&target=" .. target, headers)
end

function response(status, hdrs, body)
  if status ~= 200 then
    failed = failed + 1
    failed_status = failed_status + 1
    return
  end
  if not body or not body:find("\nprobe_success 1", 1, true) then
    failed = failed + 1
    return
  end
  ok = ok + 1
  local v = body:match('\nprobe_icmp_duration_seconds{phase="rtt"} ([%d%.eE%+%-]+)')
  v = v and tonumber(v)
  if v then
    rtt_sum = rtt_sum + v
    rtt_n = rtt_n + 1
  end
end

function done(summary, latency, requests)
  local ok_t, failed_t, fstatus_t, rsum_t, rn_t = 0, 0, 0, 0.0, 0
  for _, thread in ipairs(threads) do
    ok_t = ok_t + (thread:get("ok") or 0)
    failed_t = failed_t + (thread:get("failed") or 0)
    fstatus_t = fstatus_t + (thread:get("failed_status") or 0)
    rsum_t = rsum_t + (thread:get("rtt_sum") or 0)
    rn_t = rn_t + (thread:get("rtt_n") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    "MPB_RESULT requests=%d duration_us=%d bytes=%d ok=%d lua_failed=%d lua_failed_status=%d " ..
    "rtt_sum=%.9f rtt_n=%d err_connect=%d err_read=%d err_write=%d err_status=%d err_timeout=%d " ..
    "lat_mean_us=%.1f lat_p50_us=%d lat_p99_us=%d lat_max_us=%d\n",
    summary.requests, summary.duration, summary.bytes, ok_t, failed_t, fstatus_t,
    rsum_t, rn_t, e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(99), latency.max))
end
