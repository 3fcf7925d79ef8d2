#!/usr/bin/env bash
# The performance claim of DESIGN §1, measured in one go on one machine:
#   direct:  wrk -> nginx (no upstream keepalive, unix socket) -> php-fpm
#   tqsup:   wrk -> nginx (upstream keepalive, fastcgi_keep_conn on) -> tqsup -> php-fpm
# Each scenario has its own php-fpm with the same number of static children
# and the same hello.php; rounds alternate. Prints req/s, p50, p99, errors
# and the ratio tqsup/direct of the median req/s.
# Usage: bench/forward.sh [seconds] [connections] [rounds]
#   env: CHILDREN (4), TQSUP (path; default: cargo build --release),
#        FORWARD=unix|tcp (tqsup's listener, default unix)
set -u
D=${1:-6}; C=${2:-64}; R=${3:-3}
CHILDREN=${CHILDREN:-4}; FORWARD=${FORWARD:-unix}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
if [ -z "${TQSUP:-}" ]; then
  (cd "$ROOT" && cargo build --release -q) || exit 1
  TQSUP=$ROOT/target/release/tqsup
fi
TQSUP=$(realpath "$TQSUP")
FPM=$(ls /usr/sbin/php-fpm* 2>/dev/null | head -1)
command -v wrk >/dev/null || { echo "wrk not installed (apt-get install wrk)"; exit 1; }
W=$(mktemp -d /tmp/tqfwd.XXXXXX); chmod 755 "$W"; mkdir -p "$W/public" "$W/run"
echo '<?php echo "Hello, World!\n";' > "$W/public/hello.php"
chmod -R a+rX "$W"
pool() { # name socket
  cat <<P
[$1]
user = www-data
group = www-data
listen = $2
listen.mode = 0666
listen.backlog = 4096
pm = static
pm.max_children = $CHILDREN
chdir = $W/public
P
}
{ printf '[global]\ndaemonize = no\nerror_log = /proc/self/fd/2\n'; pool direct "$W/run/direct.sock"; } > "$W/fpm-direct.conf"
{ printf '[global]\ndaemonize = no\nerror_log = /proc/self/fd/2\n'; pool viatq "$W/run/viatq.sock"; } > "$W/fpm-viatq.conf"
if [ "$FORWARD" = tcp ]; then TQ_LISTEN=127.0.0.1:19109; NG_UP=127.0.0.1:19109
else TQ_LISTEN=$W/run/tqsup.sock; NG_UP=unix:$W/run/tqsup.sock; fi
cat > "$W/tqsup.yaml" <<T
php_fpm:
  enabled: false
  listen: $W/run/viatq.sock
  pool: { type: static, max_children: $CHILDREN }
forward:
  listen: "$TQ_LISTEN"
  socket_mode: "0666"
log: { level: warn }
T
cat > "$W/nginx.conf" <<N
worker_processes 1;
daemon off;
pid $W/run/nginx.pid;
error_log $W/run/nginx.err error;
events { worker_connections 4096; }
http {
  access_log off;
  upstream tqsup { server $NG_UP; keepalive ${KEEPALIVE:-256}; }
  server { listen 127.0.0.1:18091; root $W/public;
    location ~ \.php\$ { include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; fastcgi_pass unix:$W/run/direct.sock; } }
  server { listen 127.0.0.1:18092; root $W/public;
    location ~ \.php\$ { include /etc/nginx/fastcgi_params;
      fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; fastcgi_keep_conn on; fastcgi_pass tqsup; } }
}
N
setsid "$FPM" -F -O -y "$W/fpm-direct.conf" > "$W/run/fpm-direct.log" 2>&1 & P1=$!
setsid "$FPM" -F -O -y "$W/fpm-viatq.conf" > "$W/run/fpm-viatq.log" 2>&1 & P2=$!
sleep 1
(cd "$W" && exec setsid "$TQSUP" run -c "$W/tqsup.yaml" > "$W/run/tqsup.log" 2>&1) & P3=$!
setsid nginx -c "$W/nginx.conf" -p "$W/run" > "$W/run/nginx.log" 2>&1 & P4=$!
sleep 1.5
cleanup() { kill $P4 2>/dev/null; kill -TERM $P3 2>/dev/null; kill -QUIT $P1 $P2 2>/dev/null; sleep 0.5; [ -n "${KEEP:-}" ] && echo "kept $W" || rm -rf "$W"; }
trap cleanup EXIT
TQPID=$P3
for p in 18091 18092; do printf "check %s: " $p; curl -s -m 3 http://127.0.0.1:$p/hello.php || echo FAIL; done
declare -a RPS_A RPS_B
# CPU seconds (user+sys) used by a process and its children so far.
cpu() { local t=0 p; for p in "$@" $(pgrep -P "$(echo "$@" | tr ' ' ',')" 2>/dev/null); do
  [ -r /proc/$p/stat ] && t=$((t + $(awk '{print $14+$15}' /proc/$p/stat))); done; echo $t; }
NGPID() { cat "$W/run/nginx.pid" 2>/dev/null; }
run() { # name port
  local out rps p50 p99 err non2xx c0 c1 c2 c3 n0 n1
  c0=$(cpu $P1); c1=$(cpu $P2); c2=$(cpu $TQPID); n0=$(cpu $(NGPID))
  out=$(wrk -t2 -c"$C" -d"${D}s" --latency http://127.0.0.1:$2/hello.php 2>&1)
  rps=$(echo "$out" | awk '/Requests\/sec/{print $2}')
  p50=$(echo "$out" | awk '$1=="50%"{print $2}')
  p99=$(echo "$out" | awk '$1=="99%"{print $2}')
  err=$(echo "$out" | awk '/Socket errors/{print $0}' | sed 's/ *Socket errors: //')
  non2xx=$(echo "$out" | awk '/Non-2xx/{print $NF}')
  c0=$(( $(cpu $P1) - c0 + $(cpu $P2) - c1 )); c2=$(( $(cpu $TQPID) - c2 )); n0=$(( $(cpu $(NGPID)) - n0 ))
  printf "%-34s rps=%-10s p50=%-9s p99=%-9s errors=[%s] non2xx=%s cpu(ticks): php-fpm=%s nginx=%s tqsup=%s\n" "$1" "$rps" "$p50" "$p99" "${err:-none}" "${non2xx:-0}" "$c0" "$n0" "$c2"
  LAST=$rps
}
for r in $(seq 1 "$R"); do
  echo "--- round $r (c=$C, ${D}s, children=$CHILDREN, tqsup listener: $FORWARD)"
  if [ $((r % 2)) -eq 1 ]; then
    run "nginx-unix-nokeepalive -> php-fpm" 18091; RPS_A+=("$LAST")
    run "nginx-keepalive -> tqsup -> php-fpm" 18092; RPS_B+=("$LAST")
  else
    run "nginx-keepalive -> tqsup -> php-fpm" 18092; RPS_B+=("$LAST")
    run "nginx-unix-nokeepalive -> php-fpm" 18091; RPS_A+=("$LAST")
  fi
done
median() { printf '%s\n' "$@" | sort -g | awk '{a[NR]=$1} END{print a[int((NR+1)/2)]}'; }
MA=$(median "${RPS_A[@]}"); MB=$(median "${RPS_B[@]}")
echo "median rps: direct=$MA tqsup=$MB ratio=$(awk -v a="$MA" -v b="$MB" 'BEGIN{printf "%.2f", b/a}')"
[ -n "$TQPID" ] && grep -E 'VmHWM|Threads' /proc/"$TQPID"/status | tr -s ' \t' ' ' | paste -sd' ' | sed 's/^/tqsup: /'
