-- wrk script: GET /conversations/{id}, cycling through ids read from a file.
-- wrk ... -s bench/wrk/get.lua <url> -- <ids file, one per line> <api key>
local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

local headers, paths, count, i

function init(args)
  headers = { ["Authorization"] = "Bearer " .. args[2] }
  paths, count = {}, 0
  for line in io.lines(args[1]) do
    count = count + 1
    paths[count] = "/conversations/" .. line
  end
  -- Threads start at different places in the list.
  i = (tid * 7919) % count
end

function request()
  i = i % count + 1
  return wrk.format("GET", paths[i], headers)
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
    .. '"status":%d,"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max))
end
