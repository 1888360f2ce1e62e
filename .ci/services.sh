#!/usr/bin/env bash
# Makes sure every service the tests use is up, and PostgreSQL has wal_level=logical.
set -euo pipefail

pg_cluster="$(ls /etc/postgresql | head -n1)"
pg_ctlcluster --skip-systemctl-redirect "$pg_cluster" main start 2>/dev/null || true
if [ "$(psql -h 127.0.0.1 -U postgres -Atc 'show wal_level' test)" != "logical" ]; then
  psql -h 127.0.0.1 -U postgres -c "ALTER SYSTEM SET wal_level = logical" test
  pg_ctlcluster --skip-systemctl-redirect "$pg_cluster" main restart
fi
pgrep -x nats-server >/dev/null || start-stop-daemon --start --oknodo --background \
  --exec /usr/sbin/nats-server -- -a 127.0.0.1 -p 4222 -js -sd /var/lib/nats-server \
  -l /var/log/nats-server.log
pgrep -f beam.smp >/dev/null || rabbitmq-server -detached
pgrep -x mariadbd >/dev/null || start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd
pgrep -x redis-server >/dev/null || redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 \
  --save "" --appendonly no --dir /var/lib/redis --logfile /var/log/redis/ci.log
pgrep -x mosquitto >/dev/null || mosquitto -d -c /etc/mosquitto/mosquitto.conf

# The Node.js KurrentDB client check (crates/server/tests/node) needs node and npm.
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  apt-get update -qq && apt-get install -y -qq nodejs npm
fi

wait_for() { # name host port
  for _ in $(seq 1 90); do
    if (exec 3<>"/dev/tcp/$2/$3") 2>/dev/null; then return 0; fi
    sleep 1
  done
  echo "service $1 ($2:$3) did not come up" >&2
  return 1
}
wait_for postgresql 127.0.0.1 5432
wait_for nats 127.0.0.1 4222
wait_for rabbitmq 127.0.0.1 5672
wait_for mariadb 127.0.0.1 3306
wait_for redis 127.0.0.1 6379
wait_for mosquitto 127.0.0.1 1883
echo "services up; wal_level=$(psql -h 127.0.0.1 -U postgres -Atc 'show wal_level' test)"
