#!/usr/bin/env bash
# Starts a throwaway PostgreSQL for the source tests and benchmarks: logical
# replication on (wal_level=logical), password logins (SCRAM) on 127.0.0.1, a
# superuser `ferry` with password `ferry`, and TLS offered beside plain connections
# (a certificate for 127.0.0.1 and localhost, signed by a throwaway authority whose
# certificate is $FERRY_PG_DIR/ca.crt). Installs Debian's postgresql first when it is
# missing. Prints the URL to connect with; `scripts/postgres.sh stop` stops it and
# `scripts/postgres.sh restart` restarts it (the crash tests do).
#
#   FERRY_PG_PORT   port (default 55432)
#   FERRY_PG_DIR    data folder (default /tmp/ferry-pg-$FERRY_PG_PORT)
set -euo pipefail
port="${FERRY_PG_PORT:-55432}"
dir="${FERRY_PG_DIR:-/tmp/ferry-pg-$port}"

bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1 || true)"
if [ -z "$bin" ] || [ ! -x "$bin/initdb" ]; then
    echo "Installing: postgresql" >&2
    apt-get update -qq >&2 && apt-get install -y -qq postgresql >&2
    bin="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)"
fi

# PostgreSQL refuses to run as root: run it as the `postgres` user when we are root.
as_pg() {
    if [ "$(id -u)" = 0 ]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

case "${1:-start}" in
stop)
    [ -d "$dir" ] && as_pg "$bin/pg_ctl" -D "$dir" -m fast stop >&2 || true
    exit 0
    ;;
restart)
    as_pg "$bin/pg_ctl" -D "$dir" -m fast -l "$dir/log" -w restart >/dev/null
    exit 0
    ;;
esac

if [ -f "$dir/postmaster.pid" ] && as_pg "$bin/pg_ctl" -D "$dir" status >/dev/null 2>&1; then
    echo "postgres://ferry:ferry@127.0.0.1:$port/postgres"
    exit 0
fi
rm -rf "$dir"
mkdir -p "$dir"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"
pwfile="$(mktemp)"
echo ferry >"$pwfile"
chmod 644 "$pwfile"
as_pg "$bin/initdb" -D "$dir" -U ferry --pwfile="$pwfile" --auth=scram-sha-256 -E UTF8 --locale=C.UTF-8 >/dev/null
rm -f "$pwfile"
if ! command -v openssl >/dev/null; then
    echo "Installing: openssl" >&2
    apt-get update -qq >&2 && apt-get install -y -qq openssl >&2
fi
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj "/CN=Ferry test authority" \
    -keyout "$dir/ca.key" -out "$dir/ca.crt" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >"$dir/server.ext"
openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.crt" -CAkey "$dir/ca.key" \
    -CAcreateserial -days 30 -extfile "$dir/server.ext" -out "$dir/server.crt" 2>/dev/null
chmod 600 "$dir/server.key"
chmod 644 "$dir/ca.crt"
[ "$(id -u)" = 0 ] && chown postgres:postgres "$dir"/server.* "$dir"/ca.*
cat >>"$dir/postgresql.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir'
wal_level = logical
max_wal_senders = 40
max_replication_slots = 40
max_connections = 200
fsync = on
shared_buffers = 128MB
# A replication connection whose client went silent is ended after this (the network
# cut test waits for it).
wal_sender_timeout = 10s
ssl = on
ssl_cert_file = 'server.crt'
ssl_key_file = 'server.key'
CONF
cat >"$dir/pg_hba.conf" <<HBA
local all all scram-sha-256
host all all 127.0.0.1/32 scram-sha-256
host replication all 127.0.0.1/32 scram-sha-256
HBA
as_pg "$bin/pg_ctl" -D "$dir" -l "$dir/log" -w start >/dev/null
echo "postgres://ferry:ferry@127.0.0.1:$port/postgres"
