-- wrk script: POST /conversations, a new prompt each request.
-- wrk ... -s bench/wrk/post.lua <url> -- <user_id> <model_version_id> <api key>
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local headers, prefix, n

function init(args)
  headers = {
    ["Authorization"] = "Bearer " .. args[3],
    ["Content-Type"] = "application/json",
  }
  prefix = string.format('{"user_id":"%s","model_version_id":"%s","max_tokens":64,'
    .. '"prompt":"bench %d-', args[1], args[2], tid)
  n = 0
end

function request()
  n = n + 1
  return wrk.format("POST", "/conversations", headers, prefix .. n .. '"}')
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
