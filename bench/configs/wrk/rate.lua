-- S8: fixed request rate below saturation. Each connection waits BENCH_DELAY_MS before
-- sending its next request (rate ~= connections * 1000 / delay). Latency is measured from
-- the write of a request to its response, so this is a paced closed loop (no coordinated
-- omission correction as in wrk2); well below saturation the two agree.
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
local delay_ms = tonumber(os.getenv("BENCH_DELAY_MS") or "10")
function delay()
   return delay_ms
end
