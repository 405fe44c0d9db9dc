-- wrk script of bench/run.sh (wrk 4, LuaJIT).
--
--   wrk -t T ... -s bench/load.lua URL -- MODE FILE T TOKEN PREFIX USERS
--
-- MODE plain     POST URL (/fulfillment) with FILE, a one-line template where @PSID@ stands for
--                the user: users PREFIX..00000000000000 to PREFIX..(USERS-1) (16-digit PSIDs),
--                cycled, each thread starting at its own offset. TOKEN is the bearer token.
-- MODE handover  The same, but every request a new user: PREFIX, the thread's number (2 digits),
--                then the thread's counter (12 digits).
-- MODE deliveries POST URL (/messenger) replaying FILE, lines "<X-Hub-Signature-256>\t<body>":
--                thread i of T replays lines i, i+T, i+2T... so no two requests carry the same
--                delivery. A thread that runs out stops, and `done` reports it (the run's rate
--                is then too low: the file was too short for the duration).
--
-- `done` prints key=value lines for run.sh (latencies in microseconds).
-- PSIDs are built as strings: 16-digit numbers are beyond LuaJIT's exact integers (2^53).

local threads = {}

function setup(thread)
   thread:set("id", #threads)
   table.insert(threads, thread)
end

local mode, parts, headers
-- deliveries: the file, the number of the next line, the number of threads.
local fh, line_no, nthreads_ = nil, 0, 1
local counter, users, prefix = 0, 1, ""
exhausted = false

local function split(s, sep)
   local out, from = {}, 1
   while true do
      local a, b = string.find(s, sep, from, true)
      if not a then
         out[#out + 1] = string.sub(s, from)
         return out
      end
      out[#out + 1] = string.sub(s, from, a - 1)
      from = b + 1
   end
end

local function fill(psid)
   local buf = {}
   for i, p in ipairs(parts) do
      buf[#buf + 1] = p
      if i < #parts then
         buf[#buf + 1] = psid
      end
   end
   return table.concat(buf)
end

function init(args)
   mode = args[1]
   local file = args[2]
   local nthreads = tonumber(args[3]) or 1
   local token = args[4] or ""
   prefix = args[5] or ""
   users = tonumber(args[6]) or 1
   if mode == "deliveries" then
      -- Only opened here: wrk runs each thread's init while the threads before it already
      -- send, so init must stay short. Lines are read (buffered) as they are needed.
      fh = assert(io.open(file, "rb"))
      nthreads_ = nthreads
   elseif mode == "plain" or mode == "handover" then
      local f = assert(io.open(file, "r"))
      local template = f:read("*l")
      f:close()
      parts = split(template, "@PSID@")
      headers = { ["Content-Type"] = "application/json", ["Authorization"] = "Bearer " .. token }
      -- Threads start at different users.
      counter = math.floor(id * users / nthreads)
   else
      error("bench/load.lua: unknown mode " .. tostring(mode))
   end
end

-- This thread's next delivery (lines line_no with line_no % nthreads == id): signature, body.
local function next_delivery()
   while true do
      local line = fh:read("*l")
      if line == nil then
         return nil
      end
      local mine = line_no % nthreads_ == id
      line_no = line_no + 1
      if mine then
         local tab = string.find(line, "\t", 1, true)
         if tab then
            return string.sub(line, 1, tab - 1), string.sub(line, tab + 1)
         end
      end
   end
end

local last_sig, last_body

function request()
   if mode == "deliveries" then
      local sig, body = next_delivery()
      if sig == nil then
         -- Out of deliveries: stop this thread (reported by done) rather than repeat a mid.
         exhausted = true
         wrk.thread:stop()
         sig, body = last_sig or "", last_body or "{}"
      end
      last_sig, last_body = sig, body
      local h = { ["Content-Type"] = "application/json", ["X-Hub-Signature-256"] = sig }
      return wrk.format("POST", nil, h, body)
   end
   local psid
   if mode == "plain" then
      psid = prefix .. string.format("%014d", counter % users)
   else
      psid = prefix .. string.format("%02d%012d", id, counter)
   end
   counter = counter + 1
   return wrk.format("POST", nil, headers, fill(psid))
end

function done(summary, latency, requests)
   local stopped = 0
   for _, t in ipairs(threads) do
      if t:get("exhausted") then
         stopped = stopped + 1
      end
   end
   local e = summary.errors
   io.write(string.format("wrk_requests=%d\n", summary.requests))
   io.write(string.format("wrk_duration_us=%d\n", summary.duration))
   io.write(string.format("wrk_p50_us=%d\n", latency:percentile(50)))
   io.write(string.format("wrk_p99_us=%d\n", latency:percentile(99)))
   io.write(string.format("wrk_max_us=%d\n", latency.max))
   io.write(string.format("wrk_errors_status=%d\n", e.status))
   io.write(string.format("wrk_errors_socket=%d\n", e.connect + e.read + e.write))
   io.write(string.format("wrk_errors_timeout=%d\n", e.timeout))
   io.write(string.format("wrk_exhausted_threads=%d\n", stopped))
end
