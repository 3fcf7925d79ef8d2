#!/usr/bin/env bash
# Usage: bench/instructions.sh [seconds] [tqsup binary...]
#   Instructions tqsup itself executes per forwarded request, counted by
#   valgrind's callgrind: wrk -t1 -c8 -> nginx (keepalive, fastcgi_keep_conn)
#   -> `tqsup run` (under callgrind, supervising its own php-fpm, static 4
#   children) -> php-fpm, for `seconds` (default 10), minus an idle run of
#   the same binary (start-up, probes). Unlike req/s, the count does not
#   move with what else the machine is doing, so two builds compare
#   exactly (user space only: the kernel's share, syscalls and wake-ups,
#   is not counted). Default binary: target/release/tqsup (built if absent).
#   Needs valgrind, nginx, wrk, curl and /usr/sbin/php-fpm*; 127.0.0.1 only.
set -u
D=${1:-10}
shift || true
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BINS=("$@")
if [ ${#BINS[@]} -eq 0 ]; then
  [ -x "$ROOT/target/release/tqsup" ] || (cd "$ROOT" && cargo build --release -q) || exit 1
  BINS=("$ROOT/target/release/tqsup")
fi
for t in valgrind nginx wrk curl; do command -v $t >/dev/null || { echo "$t not installed" >&2; exit 1; }; done

measure() { # binary seconds -> "requests instructions"
  local bin=$1 d=$2 w p i reqs tot out
  w=$(mktemp -d /tmp/tqinstr.XXXXXX); chmod 755 "$w"; mkdir -p "$w/public" "$w/rt"
  echo '<?php echo "Hello, World!\n";' > "$w/public/hello.php"
  cat > "$w/tqsup.yaml" <<Y
php_fpm:
  document_root: $w/public
  pool: { type: static, max_children: 4 }
forward:
  listen: "$w/tqsup.sock"
  socket_mode: "0666"
log: { level: warn }
Y
  p=$((30000 + RANDOM % 20000))
  cat > "$w/nginx.conf" <<N
worker_processes 1; daemon off; pid $w/nginx.pid; error_log $w/nginx.err error;
events { worker_connections 1024; }
http { access_log off; upstream t { server unix:$w/tqsup.sock; keepalive 256; }
 server { listen 127.0.0.1:$p; root $w/public;
  location ~ \.php\$ { include /etc/nginx/fastcgi_params;
   fastcgi_param SCRIPT_FILENAME \$document_root\$fastcgi_script_name; fastcgi_keep_conn on; fastcgi_pass t; } } }
N
  chmod -R a+rX "$w"; chmod 700 "$w/rt"
  (cd "$w" && RUNTIME_DIRECTORY=$w/rt exec setsid valgrind --tool=callgrind \
     --callgrind-out-file="$w/cg.out" "$bin" run -c "$w/tqsup.yaml" > "$w/tqsup.log" 2>&1) &
  local vg=$!
  setsid nginx -c "$w/nginx.conf" -p "$w" > /dev/null 2>&1 &
  local ng=$!
  local up=0
  for i in $(seq 1 100); do
    [ "$(curl -s -m 2 "http://127.0.0.1:$p/hello.php")" = "Hello, World!" ] && { up=1; break; }
    sleep 0.3
  done
  if [ $up = 0 ]; then
    echo "tqsup under callgrind did not answer; its log:" >&2; tail -5 "$w/tqsup.log" >&2
    reqs=0
  elif [ "$d" -gt 0 ]; then
    out=$(wrk -t1 -c8 -d"${d}s" "http://127.0.0.1:$p/hello.php")
    reqs=$(echo "$out" | awk '/requests in/{print $1}')
    if echo "$out" | grep -q "Non-2xx\|Socket errors"; then
      echo "errors during the run:" >&2; echo "$out" | grep "Non-2xx\|Socket errors" >&2; reqs=0
    fi
  else
    sleep 5; reqs=0
  fi
  kill -TERM "$vg" 2>/dev/null; wait "$vg" 2>/dev/null
  kill -TERM "$ng" 2>/dev/null; wait "$ng" 2>/dev/null
  tot=$(cat "$w"/cg.out* 2>/dev/null | awk '/^(summary|totals):/{s+=$2} END{print s+0}')
  [ -n "${KEEP:-}" ] && echo "kept $w" >&2 || rm -rf "$w"
  echo "${reqs:-0} $tot"
}

for bin in "${BINS[@]}"; do
  bin=$(realpath "$bin") || exit 1
  read -r _ idle < <(measure "$bin" 0)
  read -r reqs busy < <(measure "$bin" "$D")
  awk -v b="$bin" -v n="$reqs" -v busy="$busy" -v idle="$idle" 'BEGIN{
    if (n > 0) printf "%s: %d requests, %.1fk instructions per request (idle run %.1fM)\n", b, n, (busy-idle)/n/1000, idle/1e6;
    else printf "%s: no requests counted\n", b }'
done
