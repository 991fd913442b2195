#!/usr/bin/env bash
# sessiongate benchmarks: the gateway side by side with the direct backend and nginx, in one run,
# against the same upstream, with the same CPU pinning (servers on one core, the load generator
# on the other).
#
#   bash bench/run.sh            full run (20 s per measurement; 10 k, 1 M and 10 M stored sessions)
#   bash bench/run.sh --quick    under 3 minutes (5 s per measurement, 10 k / 100 k sessions)
#
# Installs what it needs when missing (wrk, nginx-light from Debian; oha from crates.io), builds
# release binaries, prints a Markdown report and writes it to bench/results/<mode>-<time>.md.
# CI does not run this.
set -euo pipefail
cd "$(dirname "$0")/.."

MODE=full
[ "${1:-}" = "--quick" ] && MODE=quick
if [ "$MODE" = quick ]; then
  DUR=5; SCALES="10000 100000"; IDLE_CONNS=2000
else
  DUR=20; SCALES="10000 1000000 10000000"; IDLE_CONNS=10000
fi
CONNS=64
LOAD_CPU=0
SERVER_CPU=1
UP=127.0.0.1:18080; NGINX=127.0.0.1:18081; GW=127.0.0.1:18082; ADMIN=127.0.0.1:18083

# --- tools -------------------------------------------------------------------------------------
need=()
command -v wrk >/dev/null || need+=(wrk)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx-light)
command -v taskset >/dev/null || need+=(util-linux)
command -v curl >/dev/null || need+=(curl)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
command -v oha >/dev/null || cargo install oha --locked --quiet
cargo build --release --quiet --bin sessiongate --example bench-upstream --example bench-tool
BIN=target/release
ulimit -n 65536 2>/dev/null || true

WORK=$(mktemp -d)
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  [ -f "$WORK/nginx.pid" ] && kill "$(cat "$WORK/nginx.pid")" 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

wait_port() { for _ in $(seq 1 200); do curl -s -o /dev/null "http://$1/_health" && return 0; sleep 0.05; done; echo "nothing on $1" >&2; exit 1; }
rss_kb() { ps -o rss= -p "$1" | tr -d ' '; }

# --- servers -----------------------------------------------------------------------------------
taskset -c $SERVER_CPU $BIN/examples/bench-upstream $UP >/dev/null 2>&1 &
UP_PID=$!
PIDS+=($UP_PID)
wait_port $UP

cat > "$WORK/nginx.conf" <<EOF
worker_processes 1;
pid $WORK/nginx.pid;
error_log $WORK/nginx-error.log;
events { worker_connections 20000; }
http {
  access_log off;
  upstream backend { server $UP; keepalive 128; }
  server {
    listen $NGINX;
    location / {
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
  }
}
EOF
taskset -c $SERVER_CPU "$NGINX_BIN" -c "$WORK/nginx.conf" -p "$WORK" -g 'daemon on;' 2>/dev/null
wait_port $NGINX

"$BIN/sessiongate" keygen > "$WORK/key"
echo "bench-admin-token-0123456789" > "$WORK/admin-token"
gateway_config() { # $1 = data dir
  cat > "$WORK/gateway.toml" <<EOF
preset = "strapi-v5"
[server]
listen = "$GW"
max_connections = 60000
drain_timeout = "2s"
[upstream]
url = "http://$UP"
[store]
data_dir = "$1"
[sessions]
encryption_key_file = "$WORK/key"
[admin]
listen = "$ADMIN"
tokens = [{ name = "bench", file = "$WORK/admin-token" }]
ready_requires_upstream = false
[log]
level = "warn"
${ACCESS_LOG:+format = \"json\"}
${ACCESS_LOG:+access = \"all\"}
EOF
}
GW_PID=
COLD_MS=
start_gateway() { # $1 = data dir; sets GW_PID and COLD_MS (time until /readyz answers)
  gateway_config "$1"
  local t0; t0=$(date +%s%N)
  taskset -c $SERVER_CPU "$BIN/sessiongate" --config "$WORK/gateway.toml" >/dev/null 2>>"$WORK/gateway.log" &
  GW_PID=$!
  PIDS+=($GW_PID)
  for _ in $(seq 1 12000); do curl -sf -o /dev/null "http://$ADMIN/readyz" && break; sleep 0.01; done
  COLD_MS=$(( ($(date +%s%N) - t0) / 1000000 ))
}
stop_gateway() { kill "$GW_PID" 2>/dev/null || true; wait "$GW_PID" 2>/dev/null || true; }

# --- measurement helpers -----------------------------------------------------------------------
# wrk at saturation: prints "rps p50_ms p99_ms p999_ms errors"
run_wrk() { # $1 = url, rest = extra wrk args
  local url=$1; shift
  taskset -c $LOAD_CPU wrk -t1 -c$CONNS -d${DUR}s -s bench/wrk.lua "$@" "$url" 2>/dev/null |
    awk '/^RESULT/ { printf "%.0f %.3f %.3f %.3f %d\n", $3, $4/1000, $5/1000, $6/1000, $7 }'
}
# oha at a fixed rate: prints "rps p50_ms p99_ms p999_ms errors"
# oha at a fixed rate: prints "rps p50_ms p99_ms p999_ms errors cpu_us_per_request", the last
# being the CPU time (user + system) process $CPU_PID spent per request: steadier than req/s on
# a noisy VM, and the number an operator pays for.
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
run_rate() { # $1 = url, $2 = rate, rest = extra oha args
  local url=$1 rate=$2; shift 2
  local t0; t0=$(cpu_ticks "$CPU_PID")
  local json; json=$(taskset -c $LOAD_CPU oha --no-tui --output-format json --latency-correction -z ${DUR}s -c $CONNS -q "$rate" "$@" "$url" 2>/dev/null)
  local ticks=$(( $(cpu_ticks "$CPU_PID") - t0 ))
  echo "$json" | python3 -c 'import json,sys,os
d=json.load(sys.stdin); p=d["latencyPercentiles"]; s=d["summary"]
errs=sum(d.get("errorDistribution",{}).values())
n=max(1.0, s["requestsPerSec"]*float(sys.argv[2]))
cpu=int(sys.argv[1])*1e6/os.sysconf("SC_CLK_TCK")/n
print("%.0f %.3f %.3f %.3f %d %.1f" % (s["requestsPerSec"], p["p50"]*1000, p["p99"]*1000, p["p99.9"]*1000, errs, cpu))' "$ticks" "$DUR"
}

OUT="$WORK/report.md"
row() { echo "$*" >> "$OUT"; }
ratio() { python3 -c "import sys; a,b=float(sys.argv[1]),float(sys.argv[2]); print('%.2f' % (a/b) if b else '-')" "$1" "$2"; }

# --- scenario 1: authenticated GET --------------------------------------------------------------
echo "== scenario 1: authenticated GET, $DUR s per contender" >&2
start_gateway "$WORK/data"
JWT=$(curl -s -X POST "http://$GW/api/auth/local" -H 'content-type: application/json' \
  -d '{"identifier":"bench","password":"x"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["jwt"])')
AUTH="Authorization: Bearer $JWT"
read -r D_RPS D_P50 D_P99 D_P999 D_ERR < <(run_wrk "http://$UP/api/articles" -H "$AUTH")
read -r N_RPS N_P50 N_P99 N_P999 N_ERR < <(run_wrk "http://$NGINX/api/articles" -H "$AUTH")
read -r G_RPS G_P50 G_P99 G_P999 G_ERR < <(run_wrk "http://$GW/api/articles" -H "$AUTH")
read -r P_RPS P_P50 P_P99 P_P999 P_ERR < <(run_wrk "http://$GW/api/articles")
HALF=$(( N_RPS / 2 ))
echo "== scenario 1b: at 50 % of nginx's max ($HALF req/s)" >&2
NGINX_WORKER=$(pgrep -P "$(cat "$WORK/nginx.pid")" | head -1)
read -r DH_RPS DH_P50 DH_P99 DH_P999 DH_ERR DH_CPU < <(CPU_PID=$UP_PID run_rate "http://$UP/api/articles" $HALF -H "$AUTH")
read -r NH_RPS NH_P50 NH_P99 NH_P999 NH_ERR NH_CPU < <(CPU_PID=$NGINX_WORKER run_rate "http://$NGINX/api/articles" $HALF -H "$AUTH")
read -r GH_RPS GH_P50 GH_P99 GH_P999 GH_ERR GH_CPU < <(CPU_PID=$GW_PID run_rate "http://$GW/api/articles" $HALF -H "$AUTH")

row "## 1. Authenticated GET (\`GET /api/articles\` with a bearer token, $CONNS connections, $DUR s)"
row ""
row "At saturation (wrk):"
row ""
row "| contender | req/s | × nginx | × direct | p50 ms | p99 ms | p99.9 ms | errors |"
row "|---|---:|---:|---:|---:|---:|---:|---:|"
row "| direct (upstream alone) | $D_RPS | $(ratio $D_RPS $N_RPS) | 1.00 | $D_P50 | $D_P99 | $D_P999 | $D_ERR |"
row "| nginx proxy_pass, keep-alive | $N_RPS | 1.00 | $(ratio $N_RPS $D_RPS) | $N_P50 | $N_P99 | $N_P999 | $N_ERR |"
row "| sessiongate, tracked token (check + last-seen) | $G_RPS | $(ratio $G_RPS $N_RPS) | $(ratio $G_RPS $D_RPS) | $G_P50 | $G_P99 | $G_P999 | $G_ERR |"
row "| sessiongate, no token (pure proxy) | $P_RPS | $(ratio $P_RPS $N_RPS) | $(ratio $P_RPS $D_RPS) | $P_P50 | $P_P99 | $P_P999 | $P_ERR |"
row ""
row "At a fixed $HALF req/s (50 % of nginx's maximum; oha):"
row ""
row "| contender | req/s | p50 ms | p99 ms | p99.9 ms | added p99 over direct ms | errors | server CPU µs/req |"
row "|---|---:|---:|---:|---:|---:|---:|---:|"
row "| direct | $DH_RPS | $DH_P50 | $DH_P99 | $DH_P999 | 0 | $DH_ERR | $DH_CPU (upstream) |"
row "| nginx | $NH_RPS | $NH_P50 | $NH_P99 | $NH_P999 | $(python3 -c "print('%.3f' % ($NH_P99-$DH_P99))") | $NH_ERR | $NH_CPU (worker) |"
row "| sessiongate, tracked token | $GH_RPS | $GH_P50 | $GH_P99 | $GH_P999 | $(python3 -c "print('%.3f' % ($GH_P99-$DH_P99))") | $GH_ERR | $GH_CPU |"
row ""

# --- scenario 1c: the access log's cost (JSON, every request, to a file) -------------------------
echo "== scenario 1c: access log on" >&2
stop_gateway
ACCESS_LOG=1 start_gateway "$WORK/data"
read -r A_RPS A_P50 A_P99 A_P999 A_ERR < <(run_wrk "http://$GW/api/articles" -H "$AUTH")
read -r AH_RPS AH_P50 AH_P99 AH_P999 AH_ERR AH_CPU < <(CPU_PID=$GW_PID run_rate "http://$GW/api/articles" $HALF -H "$AUTH")
ACCESS_LINES=$(grep -c '"target":"sessiongate::access"' "$WORK/gateway.log" || true)
stop_gateway
start_gateway "$WORK/data"
row "Access log (\`log.format = \"json\"\`, \`log.access = \"all\"\`, written to a file; $ACCESS_LINES lines):"
row ""
row "| tracked token | req/s at saturation | × without | p99 ms | CPU µs/req at $HALF req/s | × without |"
row "|---|---:|---:|---:|---:|---:|"
row "| access log off | $G_RPS | 1.00 | $G_P99 | $GH_CPU | 1.00 |"
row "| access log on | $A_RPS | $(ratio $A_RPS $G_RPS) | $A_P99 | $AH_CPU | $(ratio $AH_CPU $GH_CPU) |"
row ""

# --- scenario 3: login capture and refresh ------------------------------------------------------
echo "== scenario 3: logins and refreshes" >&2
read -r L_RPS L_P50 L_P99 L_P999 L_ERR < <(BENCH_MODE=login run_wrk "http://$GW/api/auth/local")
read -r LD_RPS LD_P50 LD_P99 LD_P999 LD_ERR < <(BENCH_MODE=login run_wrk "http://$UP/api/auth/local")
REFRESH=$(taskset -c $LOAD_CPU $BIN/examples/bench-tool refresh-rate "http://$GW" 32 $DUR)
R_RPS=$(echo "$REFRESH" | python3 -c 'import json,sys; print("%.0f" % json.load(sys.stdin)["per_second"])')
row "## 3. Login capture and refresh (every session written durably before the response)"
row ""
row "| operation | per second | p50 ms | p99 ms | p99.9 ms | errors |"
row "|---|---:|---:|---:|---:|---:|"
row "| login through sessiongate (wrk, $CONNS conns) | $L_RPS | $L_P50 | $L_P99 | $L_P999 | $L_ERR |"
row "| login at the upstream directly | $LD_RPS | $LD_P50 | $LD_P99 | $LD_P999 | $LD_ERR |"
row "| refresh through sessiongate (32 sessions rotating) | $R_RPS | | | | $(echo "$REFRESH" | python3 -c 'import json,sys; print(json.load(sys.stdin)["failed"])') |"
row ""

# --- scenario 4: local revocation ---------------------------------------------------------------
echo "== scenario 4: local revocation" >&2
REVOKE=$(taskset -c $LOAD_CPU $BIN/examples/bench-tool revoke-local "http://$GW" "http://$ADMIN" "$(cat "$WORK/admin-token")" 16)
row "## 4. Revocation"
row ""
row "Local: 16 connections send requests with one session's token while an admin terminates it."
row ""
row "| served before the admin's 200 | answered 200 although started after it | refused after it | admin status |"
row "|---:|---:|---:|---:|"
row "$(echo "$REVOKE" | python3 -c 'import json,sys; d=json.load(sys.stdin); print("| %d | **%d** | %d | %d |" % (d["served_before"], d["slipped_after_ack"], d["refused_after_ack"], d["admin_status"]))')"
row ""

# --- scenario 5a: memory per idle keep-alive connection ------------------------------------------
echo "== scenario 5: memory per idle connection" >&2
BEFORE=$(rss_kb $GW_PID)
taskset -c $LOAD_CPU $BIN/examples/bench-tool idle-conns $GW $IDLE_CONNS 4 > "$WORK/idle.json" &
IDLE_PID=$!
sleep 3
DURING=$(rss_kb $GW_PID)
wait $IDLE_PID || true
OPEN=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["open"])' "$WORK/idle.json")
PER_CONN=$(python3 -c "print('%.1f' % (($DURING-$BEFORE)*1024/max(1,$OPEN)))")
stop_gateway

# --- scenario 2: stored sessions ----------------------------------------------------------------
ADMIN_TOKEN=$(cat "$WORK/admin-token")
admin_get() { curl -s -H "authorization: Bearer $ADMIN_TOKEN" "http://$ADMIN/magic-sessionmanager/$1"; }
# Median of 5 timings (ms) of one admin request.
page_ms() {
  for _ in 1 2 3 4 5; do
    curl -s -o /dev/null -w '%{time_total}\n' -H "authorization: Bearer $ADMIN_TOKEN" "http://$ADMIN/magic-sessionmanager/$1"
  done | sort -n | sed -n 3p | awk '{ printf "%.1f", $1 * 1000 }'
}
row "## 2. Stored sessions: check cost, memory, disk, cold start"
row ""
row "Sessions bulk-loaded into sled (\`bench-tool load-sessions\`: one access token each, 10 000 users, an IPv4 address each), then wrk with a random one of them per request. Cold start: from exec until \`/readyz\` answers 200 (the index is built from the sessions' leading fields and the token entries)."
row ""
row "| stored sessions | load s | cold start ms | RSS MiB | index MiB | sled on disk MiB | disk B/session | req/s | × first | p50 ms | p99 ms | p99 × first | p99.9 ms | errors |"
row "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
MEM_ROWS=(); PAGE_ROWS=()
FIRST_RPS=; FIRST_P99=; FIRST_RSS=; FIRST_N=
for N in $SCALES; do
  echo "== scenario 2: $N sessions" >&2
  DIR="$WORK/scale-$N"
  LOAD=$($BIN/examples/bench-tool load-sessions "$DIR" "$N")
  LOAD_S=$(echo "$LOAD" | python3 -c 'import json,sys; print("%.1f" % json.load(sys.stdin)["seconds"])')
  DISK=$(du -sk "$DIR" | cut -f1)
  start_gateway "$DIR"
  COLD=$COLD_MS
  RSS=$(rss_kb $GW_PID)
  STATS=$(admin_get stats)
  IDX=$(echo "$STATS" | python3 -c 'import json,sys; print(json.load(sys.stdin)["index"]["totalBytes"])')
  MEM_ROWS+=("$(echo "$STATS" | python3 -c '
import json,sys
n=int(sys.argv[1]); rss=int(sys.argv[2])*1024
b=json.load(sys.stdin)["index"]["bytes"]
parts=["tokenTable","sessionTable","listingColumns","idMap","users","aliases"]
tot=sum(b[p] for p in parts)
cells=" | ".join("%.1f" % (b[p]/n) for p in parts)
print("| %d | %s | %.1f | %.0f | %.0f |" % (n, cells, tot/n, rss/n, (rss-tot)/2**20))' "$N" "$RSS")")
  # One filtered page: the default listing, an address filter, a user filter (median of 5).
  PAGE_ROWS+=("| $N | $(page_ms 'sessions?pageSize=25') | $(page_ms 'sessions?ip=10.0.1.5&pageSize=25') | $(page_ms 'sessions?user=42&active=true&sort=-lastActive&pageSize=25') | $(page_ms 'stats') |")
  read -r S_RPS S_P50 S_P99 S_P999 S_ERR < <(BENCH_MODE=tokens BENCH_SESSIONS=$N run_wrk "http://$GW/api/articles")
  [ -z "$FIRST_RPS" ] && { FIRST_RPS=$S_RPS; FIRST_P99=$S_P99; FIRST_RSS=$RSS; FIRST_N=$N; }
  row "| $N | $LOAD_S | $COLD | $((RSS/1024)) | $((IDX/1048576)) | $((DISK/1024)) | $((DISK*1024/N)) | $S_RPS | $(ratio $S_RPS $FIRST_RPS) | $S_P50 | $S_P99 | $(ratio $S_P99 $FIRST_P99) | $S_P999 | $S_ERR |"
  LAST_RSS=$RSS; LAST_N=$N
  stop_gateway
  rm -rf "$DIR"
done
row ""
row "Index memory by part, bytes per stored session (\`/stats\` \`index.bytes\`: allocated capacity), and what the rest of the process holds (sled's page cache, up to \`store.cache_capacity_bytes\` = 256 MiB by default; the allocator; the runtime):"
row ""
row "| stored sessions | token table | session table | listing columns | id map | users | aliases | index B/session | RSS B/session | RSS − index MiB |"
row "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
for r in "${MEM_ROWS[@]}"; do row "$r"; done
row ""
row "One admin page (ms, median of 5, over loopback with curl):"
row ""
row "| stored sessions | default listing (page 1, newest first) | \`ip=\` filter | \`user=\` + active, by last activity | statistics |"
row "|---:|---:|---:|---:|---:|"
for r in "${PAGE_ROWS[@]}"; do row "$r"; done
PER_SESSION=$(python3 -c "print('%.0f' % ((${LAST_RSS}-${FIRST_RSS})*1024/max(1,${LAST_N}-${FIRST_N})))")
row ""
row "## 5. Memory"
row ""
row "| what | bytes |"
row "|---|---:|"
row "| per idle keep-alive connection ($OPEN connections open) | $PER_CONN |"
row "| per stored session (RSS growth from $FIRST_N to $LAST_N sessions) | $PER_SESSION |"
row ""

# --- report -------------------------------------------------------------------------------------
{
  echo "# sessiongate benchmark run ($MODE)"
  echo ""
  echo "- date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "- machine: $(nproc) CPUs, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs), $(uname -r)"
  echo "- sessiongate $(git describe --always --dirty 2>/dev/null || echo '?'), $(rustc --version), $($NGINX_BIN -v 2>&1 | cut -d/ -f2), $(wrk -v 2>&1 | head -1 | cut -d' ' -f2), oha $(oha --version | cut -d' ' -f2)"
  echo "- pinning: servers (upstream, nginx, sessiongate) on CPU $SERVER_CPU, load generator on CPU $LOAD_CPU"
  echo "- command: bash bench/run.sh$([ $MODE = quick ] && echo ' --quick')"
  echo ""
  cat "$OUT"
} > "$WORK/final.md"
mkdir -p bench/results
cp "$WORK/final.md" "bench/results/$MODE-$(date -u +%Y%m%dT%H%M%SZ).md"
cat "$WORK/final.md"
