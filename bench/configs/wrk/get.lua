-- S1, S2, S3, S5: plain GETs (S2 adds "Connection: close" on the command line).
dofile(os.getenv("BENCH_LUA_DIR") .. "/report.lua")
