#!/usr/bin/env bash
# Makes sure RabbitMQ (127.0.0.1:5672, guest/guest) and Redis (127.0.0.1:6379) are up, installing
# them from Debian's packages on a machine that lacks them, and that the admin page's browser test
# (tests/web.rs) finds Debian's Chromium and ChromeDriver. Used by .ci/run and by developers.
set -euo pipefail

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_install=()
command -v redis-server >/dev/null 2>&1 || need_install+=(redis-server)
command -v rabbitmq-server >/dev/null 2>&1 || need_install+=(rabbitmq-server)
command -v chromium >/dev/null 2>&1 || need_install+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_install+=(chromium-driver)
if [ ${#need_install[@]} -gt 0 ]; then
  echo "services: installing ${need_install[*]} from Debian's packages"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${need_install[@]}" >/dev/null
fi

if ! port_open 6379; then
  echo "services: starting Redis"
  mkdir -p /var/lib/redis /var/log/redis
  redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no \
    --dir /var/lib/redis --logfile /var/log/redis/ci.log
fi

if ! port_open 5672; then
  echo "services: starting RabbitMQ"
  rabbitmq-server -detached || true
  rabbitmqctl await_startup --timeout 120 >/dev/null 2>&1 || true
fi

for i in $(seq 1 120); do
  if port_open 6379 && port_open 5672; then break; fi
  sleep 1
done
port_open 6379 || { echo "services: Redis is not reachable at 127.0.0.1:6379" >&2; exit 1; }
port_open 5672 || { echo "services: RabbitMQ is not reachable at 127.0.0.1:5672" >&2; exit 1; }
echo "services: RabbitMQ and Redis are up"
