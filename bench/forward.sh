#!/usr/bin/env bash
# Usage: bench/forward.sh [seconds] [connections] [rounds] [--direct-tcp]
#   env: CHILDREN (4)  static php-fpm children per scenario
#        TQSUP         tqsup binary (default: cargo build --release -q, then target/release/tqsup)
#        DIRECT_TCP=1  same as --direct-tcp (adds the direct TCP scenario)
#        WARMUP (1)    seconds of unmeasured wrk per scenario before round 1
#        KEEP=1        keep the temp dir (configs, logs) for inspection
#        KEEPALIVE (256) nginx's upstream keepalive to tqsup (the shipped snippet's value)
#        THREADS (0)   tqsup's forward.threads (0 = auto)
#
# The performance claim of DESIGN §1, measured in one run on one machine.
# Every scenario has its own php-fpm (static, CHILDREN children, hello.php),
# and all go through the same nginx (worker_processes 1), one server block each:
#   direct-unix:  wrk -> nginx (no upstream keepalive) -unix-> php-fpm
#   direct-tcp:   wrk -> nginx (no upstream keepalive) -tcp->  php-fpm  (--direct-tcp)
#   tqsup-unix:   wrk -> nginx (keepalive KEEPALIVE, fastcgi_keep_conn on) -unix-> tqsup run -> php-fpm
#   tqsup-tcp:    wrk -> nginx (keepalive KEEPALIVE, fastcgi_keep_conn on) -tcp->  tqsup run -> php-fpm
# KEEPALIVE must be at least the connections wrk opens: past it nginx closes
# a connection after each response and opens a new one (measured: keepalive
# 32 under 64 connections cost nginx ~8 µs and tqsup ~4 µs more per request).
# tqsup runs exactly as the systemd unit runs it: `tqsup run -c tqsup.yaml`,
# supervising its own php-fpm (php_fpm.enabled: true), RUNTIME_DIRECTORY set.
# Two tqsup instances (a tqsup has one forward listener): one unix, one tcp.
# Only the scenario being measured gets load; idle ones cost nothing.
#
# Rounds alternate the scenario order (odd rounds forward, even rounds
# reversed); each run is `wrk -t2 -c<connections> -d<seconds>s --latency`.
# Per run: req/s, p50, p99, socket errors, non-2xx, and CPU per request
# (utime+stime from /proc/<pid>/stat, before/after the run, divided by the
# requests wrk completed) for tqsup (all threads), nginx (master+workers),
# php-fpm (master+children) and wrk, the whole machine's busy CPU per request
# (/proc/stat: what bounds req/s once the cores are saturated) and context
# switches per request. At the end, per scenario: median req/s, median
# p99, median CPU µs/request, and the ratios tqsup-*/direct-unix of median req/s.
set -u
usage() { sed -n '2,7p' "$0" | sed 's/^# \{0,1\}//'; }
ARGS=()
for a in "$@"; do
  case "$a" in
    --direct-tcp) DIRECT_TCP=1 ;;
    -h|--help) usage; exit 0 ;;
    -*) echo "unknown option $a" >&2; usage >&2; exit 2 ;;
    *) ARGS+=("$a") ;;
  esac
done
D=${ARGS[0]:-6}; C=${ARGS[1]:-64}; R=${ARGS[2]:-4}
CHILDREN=${CHILDREN:-4}; DIRECT_TCP=${DIRECT_TCP:-0}; WARMUP=${WARMUP:-1}
KEEPALIVE=${KEEPALIVE:-256}; THREADS=${THREADS:-0}
for v in "$D" "$C" "$R" "$CHILDREN" "$WARMUP" "$KEEPALIVE" "$THREADS"; do
  case "$v" in ''|*[!0-9]*) echo "not a whole number: '$v'" >&2; usage >&2; exit 2 ;; esac
done

die() { echo "forward.sh: $*" >&2; exit 1; }
ROOT=$(cd "$(dirname "$0")/.." && pwd)
for t in wrk nginx curl getconf; do command -v $t >/dev/null || die "$t not installed"; done
FPM=$(ls /usr/sbin/php-fpm* 2>/dev/null | sort -V | tail -1)
[ -x "${FPM:-}" ] || die "no /usr/sbin/php-fpm* found"
if [ -z "${TQSUP:-}" ]; then
  echo "building tqsup (cargo build --release -q in $ROOT) ..."
  (cd "$ROOT" && cargo build --release -q) || die "cargo build failed"
  TQSUP=$ROOT/target/release/tqsup
fi
[ -x "$TQSUP" ] || die "TQSUP=$TQSUP is not executable"
TQSUP=$(realpath "$TQSUP")
HZ=$(getconf CLK_TCK)
[ "$(id -u)" = 0 ] && AS_ROOT=1 || AS_ROOT=0

echo "== versions"
nginx -v 2>&1
"$FPM" -v 2>&1 | head -1
"$TQSUP" --version 2>/dev/null | head -1 || echo "tqsup: $TQSUP (no --version)"
wrk --version 2>&1 | head -1
echo "$(nproc) cores, CHILDREN=$CHILDREN, wrk -t2 -c$C -d${D}s, rounds=$R, nginx keepalive $KEEPALIVE, forward.threads $THREADS, CLK_TCK=$HZ, php-fpm binary $FPM"

W=$(mktemp -d /tmp/tqfwd.XXXXXX) || die "mktemp failed"
PIDS=()      # every process we started (session leaders)
cleanup() {
  local p pg i
  trap - EXIT INT TERM
  # tqsup stops its own php-fpm (drain, SIGQUIT, then SIGTERM/SIGKILL).
  for p in "${PIDS[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for i in $(seq 1 120); do
    local alive=0
    for p in "${PIDS[@]}"; do kill -0 "$p" 2>/dev/null && alive=1; done
    [ $alive = 0 ] && break; sleep 0.1
  done
  # Whatever is left (including php-fpm process groups tqsup made): kill it.
  for p in "${PIDS[@]}" "${FPM_PGIDS[@]}"; do
    kill -KILL "$p" 2>/dev/null; pg=$p; kill -KILL -- "-$pg" 2>/dev/null
  done
  if [ -n "${KEEP:-}" ]; then echo "kept $W"; else rm -rf "$W"; fi
}
FPM_PGIDS=()
trap cleanup EXIT
trap 'echo "forward.sh: interrupted, cleaning up" >&2; exit 130' INT TERM

chmod 755 "$W"; mkdir -p "$W/public" "$W/run"
echo '<?php echo "Hello, World!\n";' > "$W/public/hello.php"

free_port() { # a TCP port nobody listens on (and that we did not hand out yet)
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    case " ${USED_PORTS:-} " in *" $p "*) continue ;; esac
    if command -v ss >/dev/null; then
      [ -z "$(ss -Htan "sport = :$p" 2>/dev/null)" ] || continue
    else
      (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null && continue
    fi
    USED_PORTS="${USED_PORTS:-} $p"; echo "$p"; return
  done
}

# ---- direct php-fpm instances (one per direct scenario)
fpm_conf() { # name listen
  printf '[global]\ndaemonize = no\nerror_log = /proc/self/fd/2\npid = %s\n' "$W/run/fpm-$1.pid"
  printf '[%s]\n' "$1"
  [ $AS_ROOT = 1 ] && printf 'user = www-data\ngroup = www-data\n'
  cat <<P
listen = $2
listen.mode = 0666
listen.backlog = 4096
pm = static
pm.max_children = $CHILDREN
chdir = $W/public
P
}
SCEN=(direct-unix)
[ "$DIRECT_TCP" = 1 ] && SCEN+=(direct-tcp)
SCEN+=(tqsup-unix tqsup-tcp)
declare -A PORT FPM_PID UPSTREAM TQ_PID
DIRECT_TCP_PORT=$(free_port)
UPSTREAM[direct-unix]="unix:$W/run/fpm-direct-unix.sock"
UPSTREAM[direct-tcp]="127.0.0.1:$DIRECT_TCP_PORT"
fpm_conf direct-unix "$W/run/fpm-direct-unix.sock" > "$W/fpm-direct-unix.conf"
fpm_conf direct-tcp "127.0.0.1:$DIRECT_TCP_PORT" > "$W/fpm-direct-tcp.conf"

# ---- tqsup instances (each supervises its own php-fpm)
TQ_TCP_PORT=$(free_port)
for k in unix tcp; do
  d=$W/tqsup-$k; mkdir -p "$d/rt"; chmod 700 "$d/rt"
  if [ $k = unix ]; then L=$d/tqsup.sock; UPSTREAM[tqsup-unix]="unix:$L"
  else L=127.0.0.1:$TQ_TCP_PORT; UPSTREAM[tqsup-tcp]=$L; fi
  cat > "$d/tqsup.yaml" <<T
php_fpm:
  document_root: $W/public
  pool: { type: static, max_children: $CHILDREN }
forward:
  listen: "$L"
  socket_mode: "0666"
  threads: $THREADS
log: { level: warn }
T
done

# ---- nginx: one server block per scenario
NG_PORTS=""
{
  cat <<N
worker_processes 1;
daemon off;
pid $W/run/nginx.pid;
error_log $W/run/nginx.err error;
events { worker_connections 4096; }
http {
  access_log off;
  upstream tqsup_unix { server ${UPSTREAM[tqsup-unix]}; keepalive $KEEPALIVE; }
  upstream tqsup_tcp  { server ${UPSTREAM[tqsup-tcp]}; keepalive $KEEPALIVE; }
N
  for s in "${SCEN[@]}"; do
    p=$(free_port); NG_PORTS="$NG_PORTS $s=$p"
    case $s in
      direct-*) pass="fastcgi_pass ${UPSTREAM[$s]};" ;;
      tqsup-unix) pass="fastcgi_keep_conn on; fastcgi_pass tqsup_unix;" ;;
      tqsup-tcp) pass="fastcgi_keep_conn on; fastcgi_pass tqsup_tcp;" ;;
    esac
    cat <<N
  server { listen 127.0.0.1:$p; root $W/public;  # $s
    location ~ \.php\$ { include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; $pass } }
N
  done
  echo "}"
} > "$W/nginx.conf"
for kv in $NG_PORTS; do PORT[${kv%%=*}]=${kv#*=}; done
chmod -R a+rX "$W"
chmod 700 "$W/tqsup-unix/rt" "$W/tqsup-tcp/rt"

# ---- start everything (each in its own session, so cleanup can find it)
for s in "${SCEN[@]}"; do
  case $s in direct-*)
    setsid "$FPM" -F -O -y "$W/fpm-$s.conf" > "$W/run/fpm-$s.log" 2>&1 &
    FPM_PID[$s]=$!; PIDS+=($!) ;;
  esac
done
for k in unix tcp; do
  d=$W/tqsup-$k
  (cd "$d" && RUNTIME_DIRECTORY=$d/rt exec setsid "$TQSUP" run -c "$d/tqsup.yaml" > "$d/tqsup.log" 2>&1) &
  TQ_PID[tqsup-$k]=$!; PIDS+=($!)
done
nginx -t -c "$W/nginx.conf" -p "$W/run" > "$W/run/nginx-t.log" 2>&1 || { cat "$W/run/nginx-t.log"; die "nginx -t failed"; }
setsid nginx -c "$W/nginx.conf" -p "$W/run" > "$W/run/nginx.log" 2>&1 & NGINX_PID=$!; PIDS+=($!)

logof() { case $1 in direct-*) echo "$W/run/fpm-$1.log" ;; tqsup-*) echo "$W/$1/tqsup.log" ;; esac; }
alive_or_die() { # scenario
  local p
  kill -0 $NGINX_PID 2>/dev/null || { tail -20 "$W/run/nginx.log" "$W/run/nginx.err" 2>/dev/null; die "nginx exited"; }
  case $1 in direct-*) p=${FPM_PID[$1]} ;; *) p=${TQ_PID[$1]} ;; esac
  kill -0 "$p" 2>/dev/null || { echo "--- $(logof "$1")"; tail -30 "$(logof "$1")"; die "$1: its server (pid $p) exited"; }
}
# Wait until each scenario answers hello.php through nginx (up to 30 s each).
echo "== waiting for the servers"
for s in "${SCEN[@]}"; do
  ok=0
  for i in $(seq 1 300); do
    alive_or_die "$s"
    body=$(curl -s -m 2 "http://127.0.0.1:${PORT[$s]}/hello.php" 2>/dev/null)
    [ "$body" = "Hello, World!" ] && { ok=1; break; }
    sleep 0.1
  done
  [ $ok = 1 ] || { echo "--- $(logof "$s")"; tail -30 "$(logof "$s")"; tail -5 "$W/run/nginx.err" 2>/dev/null; die "$s: no 'Hello, World!' from 127.0.0.1:${PORT[$s]} after 30 s (last: '$body')"; }
  printf '  %-11s ok  nginx 127.0.0.1:%-5s -> %s\n' "$s" "${PORT[$s]}" "${UPSTREAM[$s]}"
done

# Log lines from here on are the measurement's (the wait above may have logged
# refused connects while a php-fpm was still starting).
lines() { local n; n=$(grep -c . "$1" 2>/dev/null); echo "${n:-0}"; }
declare -A LOG0
for f in "$W/run/nginx.err" "$W/tqsup-unix/tqsup.log" "$W/tqsup-tcp/tqsup.log"; do LOG0[$f]=$(lines "$f"); done
new_lines() { tail -n +$(( ${LOG0[$1]} + 1 )) "$1" 2>/dev/null; }

# ---- CPU accounting
stat_ticks() { # utime+stime of one pid (the main pid of a process covers all its threads)
  local s
  s=$(cat "/proc/$1/stat" 2>/dev/null) || { echo 0; return; }
  s=${s##*) }          # fields from 3 on (comm may contain spaces)
  set -- $s            # $12 = utime (field 14), $13 = stime (field 15)
  echo $(( ${12} + ${13} ))
}
kids() { local p; for p in "$@"; do cat /proc/"$p"/task/*/children 2>/dev/null; done; }
fpm_pids() { # php-fpm master(s) and children of a scenario
  local m
  case $1 in
    direct-*) m=${FPM_PID[$1]} ;;
    tqsup-*) m=$(for c in $(kids "${TQ_PID[$1]}"); do
                   case "$(cat /proc/$c/comm 2>/dev/null)" in php-fpm*) echo "$c" ;; esac; done) ;;
  esac
  [ -n "$m" ] && echo $m $(kids $m)
}
sum_ticks() { local t=0 p; for p in "$@"; do t=$(( t + $(stat_ticks "$p") )); done; echo $t; }
snapshot() { # scenario -> "tqsup nginx php-fpm" ticks
  local tq=0
  case $1 in tqsup-*) tq=$(stat_ticks "${TQ_PID[$1]}") ;; esac
  echo "$tq $(sum_ticks $NGINX_PID $(kids $NGINX_PID)) $(sum_ticks $(fpm_pids "$1"))"
}
# remember tqsup's php-fpm process groups for cleanup (tqsup makes one per php-fpm)
for s in tqsup-unix tqsup-tcp; do
  for p in $(fpm_pids $s); do
    pg=$(awk '{sub(/.*\) /,""); print $3}' /proc/$p/stat 2>/dev/null)
    [ -n "$pg" ] && [ "$pg" = "$p" ] && FPM_PGIDS+=("$pg")
  done
done

us_per_req() { # ticks requests
  awk -v t="$1" -v n="$2" -v hz="$HZ" 'BEGIN{ if (n>0) printf "%.1f", t*1e6/hz/n; else print "nan" }'
}
to_ms() { # wrk latency (850.00us, 12.3ms, 1.02s, 2.00m) -> ms
  awk -v v="$1" 'BEGIN{ if (v ~ /us$/) printf "%.3f", v/1000; else if (v ~ /ms$/) printf "%.3f", v+0;
    else if (v ~ /m$/) printf "%.3f", v*60000; else if (v ~ /s$/) printf "%.3f", v*1000; else print "nan" }'
}
median() { # format values... (middle value, or mean of the two middle ones)
  local f=$1; shift
  printf '%s\n' "$@" | grep -v nan | sort -g | awk -v f="$f" '{a[NR]=$1} END{ if (NR==0) {print "nan"; exit}
  printf f "\n", (NR%2) ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2 }'; }

machine() { # busy ticks of all CPUs, context switches since boot
  local cpu u n sy i w x y z
  read -r cpu u n sy i w x y z _ < /proc/stat
  echo "$((u + n + sy + x + y + z)) $(awk '/^ctxt/{print $2}' /proc/stat)"
}
declare -A RPS P99 CPU_TQ CPU_NG CPU_FPM CPU_WRK CPU_ALL CTX
run() { # scenario [warmup-seconds]
  local s=$1 d=${2:-$D} out b a mb ma rps p50 p99 reqs err non2xx tq ng fp wk all ctx
  alive_or_die "$s"
  b=($(snapshot "$s")); mb=($(machine))
  # bash's `time` gives wrk's own CPU (user and system seconds).
  out=$( { TIMEFORMAT='WRKCPU %U %S'; time wrk -t2 -c"$C" -d"${d}s" --latency "http://127.0.0.1:${PORT[$s]}/hello.php"; } 2>&1)
  a=($(snapshot "$s")); ma=($(machine))
  [ -n "${2:-}" ] && return
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  reqs=$(echo "$out" | awk '/requests in/{print $1}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  err=$(echo "$out" | sed -n 's/^ *Socket errors: //p')
  non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  if [ -z "$rps" ] || [ -z "$reqs" ]; then echo "$out"; die "$s: could not parse wrk's output"; fi
  tq=$(us_per_req $((a[0]-b[0])) "$reqs"); ng=$(us_per_req $((a[1]-b[1])) "$reqs"); fp=$(us_per_req $((a[2]-b[2])) "$reqs")
  wk=$(echo "$out" | awk -v n="$reqs" '/^WRKCPU/{ printf "%.1f", ($2 + $3) * 1e6 / n }')
  all=$(us_per_req $((ma[0]-mb[0])) "$reqs")
  ctx=$(awk -v c=$((ma[1]-mb[1])) -v n="$reqs" 'BEGIN{ printf "%.1f", c / n }')
  case $s in direct-*) tq=- ;; esac
  printf "  %-11s req/s=%-9s p50=%-8s p99=%-8s errors=[%s] non2xx=%-4s cpu µs/req: tqsup=%-5s nginx=%-5s php-fpm=%-5s wrk=%-5s machine=%-6s ctx/req=%s\n" \
    "$s" "$rps" "$p50" "$p99" "${err:-none}" "${non2xx:-0}" "$tq" "$ng" "$fp" "$wk" "$all" "$ctx"
  RPS[$s]="${RPS[$s]:-} $rps"; P99[$s]="${P99[$s]:-} $(to_ms "$p99")"
  CPU_TQ[$s]="${CPU_TQ[$s]:-} $tq"; CPU_NG[$s]="${CPU_NG[$s]:-} $ng"; CPU_FPM[$s]="${CPU_FPM[$s]:-} $fp"
  CPU_WRK[$s]="${CPU_WRK[$s]:-} $wk"; CPU_ALL[$s]="${CPU_ALL[$s]:-} $all"; CTX[$s]="${CTX[$s]:-} $ctx"
  [ -n "$err$non2xx" ] && ODD="${ODD:-}  round $ROUND $s: errors=[${err:-none}] non2xx=${non2xx:-0}"$'\n'
}

if [ "$WARMUP" -gt 0 ]; then
  echo "== warm-up (${WARMUP}s per scenario, not counted)"
  for s in "${SCEN[@]}"; do run "$s" "$WARMUP"; done
fi
ODD=""
for ROUND in $(seq 1 "$R"); do
  echo "== round $ROUND/$R"
  order=("${SCEN[@]}")
  if [ $((ROUND % 2)) = 0 ]; then
    order=(); for ((i=${#SCEN[@]}-1; i>=0; i--)); do order+=("${SCEN[$i]}"); done
  fi
  for s in "${order[@]}"; do run "$s"; done
done

echo "== after the rounds: each scenario still answers a fresh client"
for s in "${SCEN[@]}"; do
  code=$(curl -s -m 3 -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$s]}/hello.php"); code=${code:-timeout}
  printf '  %-11s %s\n' "$s" "$code"
  [ "$code" = 200 ] || ODD="${ODD}  after the rounds $s answered $code"$'\n'
done

echo "== medians over $R rounds (c=$C, ${D}s, CHILDREN=$CHILDREN)"
printf "  %-11s %9s %10s   %s\n" scenario "req/s" "p99 ms" "cpu µs/req: tqsup nginx php-fpm (total)   wrk machine  ctx/req"
declare -A MED
for s in "${SCEN[@]}"; do
  MED[$s]=$(median %.2f ${RPS[$s]})
  mt=$(median %.1f ${CPU_TQ[$s]//-/}); mn=$(median %.1f ${CPU_NG[$s]}); mf=$(median %.1f ${CPU_FPM[$s]})
  case $s in direct-*) mt=- ;; esac
  tot=$(awk -v a="$mt" -v b="$mn" -v c="$mf" 'BEGIN{printf "%.1f", (a=="-"?0:a)+b+c}')
  printf "  %-11s %9s %10s   %17s %5s %7s %-8s %5s %7s %8s\n" "$s" "${MED[$s]}" "$(median %.2f ${P99[$s]})" "$mt" "$mn" "$mf" "($tot)" \
    "$(median %.1f ${CPU_WRK[$s]})" "$(median %.1f ${CPU_ALL[$s]})" "$(median %.1f ${CTX[$s]})"
done
ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (a>0) printf "%.2f", b/a; else print "nan" }'; }
echo "  ratio tqsup-unix/direct-unix = $(ratio "${MED[direct-unix]}" "${MED[tqsup-unix]}")"
echo "  ratio tqsup-tcp/direct-unix  = $(ratio "${MED[direct-unix]}" "${MED[tqsup-tcp]}")"
if [ "$DIRECT_TCP" = 1 ]; then
  echo "  ratio tqsup-tcp/direct-tcp   = $(ratio "${MED[direct-tcp]}" "${MED[tqsup-tcp]}")"
fi
for s in tqsup-unix tqsup-tcp; do
  st=$(grep -E 'VmHWM|Threads' /proc/"${TQ_PID[$s]}"/status 2>/dev/null | tr -s ' \t' ' ' | paste -sd' ')
  echo "  $s: pid ${TQ_PID[$s]} $st"
done
for f in "$W/run/nginx.err" "$W/tqsup-unix/tqsup.log" "$W/tqsup-tcp/tqsup.log"; do
  n=$(new_lines "$f" | grep -c .)
  [ "$n" -gt 0 ] && ODD="${ODD}  ${f#$W/}: $n new lines, last: $(new_lines "$f" | tail -1)"$'\n'
done
if [ -n "$ODD" ]; then echo "== anything odd"; printf '%s' "$ODD"; else echo "== nothing odd (no socket errors, no non-2xx, empty error logs)"; fi
