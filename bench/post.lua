-- wrk script: POST an OpenAI chat-completions body read from a file.
--
--   wrk -t1 -c64 -d10s --latency -s bench/post.lua \
--       http://127.0.0.1:PORT/v1/chat/completions -- BODY_FILE [X_USER]
--
-- The body file may also be given as BENCH_BODY in the environment.  At the
-- end a machine-readable line "BENCH key=value ..." is printed (latencies in
-- microseconds) for bench/run.sh; wrk's own report is printed as usual.

function init(args)
   local path = args[1] or os.getenv("BENCH_BODY")
   assert(path, "post.lua: no body file (pass it after --, or BENCH_BODY)")
   local f = assert(io.open(path, "rb"))
   local body = f:read("*a")
   f:close()

   -- wrk.format() adds Content-Length for a body
   wrk.method = "POST"
   wrk.body = body
   wrk.headers["Content-Type"] = "application/json"
   wrk.headers["Authorization"] = "Bearer sk-bench-0000000000000000"
   wrk.headers["X-User"] = args[2] or os.getenv("BENCH_USER") or "bench-user"
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d rps=%.2f p50_us=%d p90_us=%d " ..
      "p99_us=%d max_us=%d status_errors=%d connect=%d read=%d write=%d " ..
      "timeout=%d\n",
      summary.requests, summary.duration,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(90),
      latency:percentile(99), latency.max,
      e.status, e.connect, e.read, e.write, e.timeout))
end
