-- Every response of a wrk run counted by status code, across wrk's threads, for
-- benchmarks/load.py, soak.py and faults.py (load.py appends this file to a script that sets
-- wrk.method, wrk.headers and wrk.body).
--
-- Each thread counts in its own Lua state: responses per status, 503s without a Retry-After
-- header, and responses per status per wall-clock second (os.time(), to line a second up with
-- an event the benchmark timed, such as a kill; keyed second * 1000 + status, as wrk 4.1
-- crashes copying nested tables), and the start of the first body of each status other than
-- 2xx (what the error said). done() adds the threads' counts up (setup() kept a handle
-- on each thread, thread:get() copies its flat tables) and prints one line:
--   WRK_STATUS_JSON {"requests": ..., "errors": {...}, "statuses": {...}, ...}
-- Socket errors are wrk's own (summary.errors): a read error is a connection reset or closed
-- under a request; those requests have no status and are not in summary.requests.

local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

function init(args)
   statuses = {}
   no_retry_after = 0
   seconds = {}
   samples = {} -- the start of the first body of each status other than 2xx
end

local function has_retry_after(headers)
   for name, _ in pairs(headers) do
      if string.lower(name) == "retry-after" then
         return true
      end
   end
   return false
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
   if status == 503 and not has_retry_after(headers) then
      no_retry_after = no_retry_after + 1
   end
   local key = os.time() * 1000 + status
   seconds[key] = (seconds[key] or 0) + 1
   if (status < 200 or status > 299) and samples[status] == nil then
      samples[status] = string.sub(body or "", 1, 300)
   end
end

local function add(into, from)
   for key, n in pairs(from or {}) do
      into[key] = (into[key] or 0) + n
   end
end

local function counts_json(counts)
   local parts = {}
   for key, n in pairs(counts) do
      table.insert(parts, string.format('"%d": %d', key, n))
   end
   return "{" .. table.concat(parts, ", ") .. "}"
end

local function quoted(text)
   return '"' .. string.gsub(text, '[%c"\\\128-\255]', function(c)
      return string.format("\\u%04x", string.byte(c))
   end) .. '"'
end

function done(summary, latency, requests)
   local total, per_second, missing, sample_parts, sampled = {}, {}, 0, {}, {}
   for _, thread in ipairs(threads) do
      add(total, thread:get("statuses"))
      missing = missing + (thread:get("no_retry_after") or 0)
      add(per_second, thread:get("seconds"))
      for status, body in pairs(thread:get("samples") or {}) do
         if not sampled[status] then
            sampled[status] = true
            table.insert(sample_parts, string.format('"%d": %s', status, quoted(body)))
         end
      end
   end
   local errors = summary.errors
   io.write("WRK_STATUS_JSON ", string.format(
      '{"requests": %d, "duration_us": %d, "errors": {"connect": %d, "read": %d, '
         .. '"write": %d, "timeout": %d, "status": %d}, "statuses": %s, '
         .. '"503_without_retry_after": %d, "latency_us": {"p50": %d, "p99": %d, '
         .. '"max": %d}, "per_second": %s, "samples": {%s}}',
      summary.requests, summary.duration, errors.connect, errors.read, errors.write,
      errors.timeout, errors.status, counts_json(total), missing,
      latency:percentile(50), latency:percentile(99), latency.max,
      counts_json(per_second), table.concat(sample_parts, ", ")), "\n")
end
