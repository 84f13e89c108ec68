#!/bin/bash
# Entrypoint of the stack's PostgreSQL: on the first start, initdb with the
# password from the environment (never baked into the image) and create the
# database; then run the server in the foreground as the postgres user.  Over
# TCP every user needs the password (scram-sha-256); the Unix socket, inside
# the container only, trusts local processes (the health check, initdb).
# POSTGRES_LISTEN_ADDRESSES (default *) picks the addresses it listens on:
# 127.0.0.1 on host networking.
set -euo pipefail
: "${POSTGRES_PASSWORD:?POSTGRES_PASSWORD is required}"
user=${POSTGRES_USER:-postgres}
db=${POSTGRES_DB:-$user}
install -d -o postgres -g postgres -m 0700 "$PGDATA"
install -d -o postgres -g postgres /run/postgresql
if [ ! -s "$PGDATA/PG_VERSION" ]; then
    pwfile=$(mktemp)
    printf '%s' "$POSTGRES_PASSWORD" >"$pwfile"
    chown postgres "$pwfile"
    su postgres -c "initdb -D '$PGDATA' --username='$user' --pwfile='$pwfile' --auth-host=scram-sha-256 --auth-local=trust" >/dev/null
    rm -f "$pwfile"
    echo "listen_addresses = '*'" >>"$PGDATA/postgresql.conf"
    echo "host all all all scram-sha-256" >>"$PGDATA/pg_hba.conf"
    su postgres -c "pg_ctl -D '$PGDATA' -o '-c listen_addresses= -p $PGPORT' -w start" >/dev/null
    if [ "$db" != postgres ]; then
        su postgres -c "psql -p $PGPORT -U '$user' -d postgres -v ON_ERROR_STOP=1 -c 'CREATE DATABASE \"$db\"'" >/dev/null
    fi
    su postgres -c "pg_ctl -D '$PGDATA' -m fast -w stop" >/dev/null
fi
listen=${POSTGRES_LISTEN_ADDRESSES:-*}
[[ $listen =~ ^[A-Za-z0-9.:,*-]+$ ]] || { echo "POSTGRES_LISTEN_ADDRESSES: expected addresses such as 127.0.0.1 or *" >&2; exit 1; }
exec su postgres -c "exec postgres -D '$PGDATA' -p $PGPORT -c listen_addresses='$listen'"
