#!/usr/bin/env bash
# Installs the system packages tqsup's demo and tests use, when missing:
# php-fpm, nginx-light, libfcgi-bin (cgi-fcgi), and with --all also the other
# web servers of the deployment tests (apache2, caddy, haproxy) and wrk for
# the benchmarks. As root it installs them; otherwise it prints the exact
# command and exits 1.
set -euo pipefail

want=(php-fpm nginx-light libfcgi-bin)
if [ "${1:-}" = "--all" ] || [ "${1:-}" = "--tests" ]; then
  want+=(apache2 caddy haproxy wrk)
fi

# A package is "present" when the command it brings is.
have() {
  case "$1" in
    php-fpm) ls /usr/sbin/php-fpm* >/dev/null 2>&1 || command -v php-fpm >/dev/null 2>&1 ;;
    nginx-light) command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] ;;
    libfcgi-bin) command -v cgi-fcgi >/dev/null 2>&1 ;;
    apache2) [ -x /usr/sbin/apache2 ] ;;
    caddy) command -v caddy >/dev/null 2>&1 ;;
    haproxy) command -v haproxy >/dev/null 2>&1 || [ -x /usr/sbin/haproxy ] ;;
    wrk) command -v wrk >/dev/null 2>&1 ;;
    *) return 1 ;;
  esac
}

missing=()
for p in "${want[@]}"; do
  have "$p" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

cmd="apt-get update && apt-get install -y ${missing[*]}"
if [ "$(id -u)" -ne 0 ]; then
  echo "tqsup needs these packages: ${missing[*]}" >&2
  echo "install them with:  sudo sh -c '$cmd'" >&2
  exit 1
fi
echo "installing: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
# Keep package scripts from starting the distribution's own services.
policy=/usr/sbin/policy-rc.d
created_policy=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' > "$policy"; chmod +x "$policy"; created_policy=1
fi
apt-get update -q >/dev/null
apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
[ $created_policy -eq 1 ] && rm -f "$policy"
for p in "${missing[@]}"; do
  have "$p" || { echo "install of $p did not bring its command" >&2; exit 1; }
done
