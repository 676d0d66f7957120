#!/bin/sh
# follow-primary.sh: a follow script for pgpool-II 4.1 to 4.7 that keeps the standbys in
# load balancing after a promotion, then tells pgpool-anycast-hook. An example: read it,
# adjust the settings below, install it as /etc/pgpool2/follow-primary.sh (mode 755).
#
# pgpool.conf, with the same arguments on every version (each version silently ignores
# the other's parameter name):
#   4.2 and later: follow_primary_command = '/etc/pgpool2/follow-primary.sh %d %h %p %m %H %r %P'
#   4.1:           follow_master_command = '/etc/pgpool2/follow-primary.sh %d %h %p %m %H %r %P'
#
# Why it must re-attach: once a follow command is set, pgpool marks EVERY backend but the
# new primary down when it finds a new primary, then runs the command once for each of
# them, the failed old primary included. A node the command does not attach again stays
# out of load balancing. pgpool-anycast-hook itself needs no follow command (without one
# pgpool detaches only the failed node): set one only for a script that re-attaches.
#
# For the node it is called for, this script
#   1. re-points a reachable standby at the new primary: ALTER SYSTEM SET
#      primary_conninfo and a reload (PostgreSQL 13 and later restart the WAL receiver,
#      and recovery_target_timeline = 'latest', the default, follows the new timeline);
#   2. attaches it again (pcp_attach_node) once it streams from the new primary;
#   3. leaves anything else detached for the operator: the old primary, or a standby
#      that cannot follow (rebuild it with pg_rewind or pg_basebackup, then run
#      pcp_attach_node);
#   4. last, tells the hook that node %m is the primary now. `add` is idempotent, and
#      the hook decides whether it changes anything (with a fixed primary_node_id it
#      announces only when %m is that node).
#
# pgpool runs it as its own user (postgres) with no timeout, in its follow process, and
# ignores its exit status: every wait here is bounded and every outcome is logged to
# stderr, which is pgpool's log. Every pgpool node runs it (without watchdog); running
# the steps twice does no harm.
set -u

# Settings. A VAR=value in front of the script in pgpool.conf overrides each one.
: "${PGSUPERUSER:=postgres}"              # connects to the standbys; password in ~/.pgpass
: "${REPLICATION_OPTIONS:=user=replicator}" # primary_conninfo besides host and port, no quotes
: "${PCP_HOST:=/var/run/postgresql}"      # pgpool's pcp_socket_dir, or its address
: "${PCP_PORT:=9898}"
: "${PCP_USER:=pgpool}"                   # password in ~/.pcppass
: "${STREAM_WAIT:=15}"                    # seconds a re-pointed standby has to stream
: "${HOOK:=/usr/bin/pgpool-anycast-hook}"

if [ "$#" -lt 6 ]; then
    echo "usage: $0 %d %h %p %m %H %r [%P]" >&2
    exit 64
fi
# pgpool 4.4 and later expand %d, %p and %m with a leading space; $(( )) drops it.
node=$(($1))
host=$2
port=$(($3))
new_primary=$(($4))
new_host=$5
new_port=$6

log() {
    echo "follow-primary.sh: node $node: $*" >&2
}

first_line() {
    printf '%s\n' "$1" | head -n 1
}

sql() {
    PGCONNECT_TIMEOUT=5 psql -X -q -A -t -h "$host" -p "$port" -U "$PGSUPERUSER" \
        -d postgres -c "$1" 2>&1
}

streams_from_new_primary() {
    waited=0
    while [ "$waited" -lt "$STREAM_WAIT" ]; do
        receiver=$(sql "select status || ' ' || sender_host from pg_stat_wal_receiver")
        if [ "$receiver" = "streaming $new_host" ]; then
            return 0
        fi
        sleep 1
        waited=$((waited + 1))
    done
    return 1
}

receiver=""
if [ "$node" -ne "$new_primary" ]; then
    recovery=$(sql "select pg_is_in_recovery()")
    if [ "$recovery" = t ]; then
        conninfo="host=$new_host port=$new_port $REPLICATION_OPTIONS"
        if sql "alter system set primary_conninfo = '$conninfo'" >/dev/null \
            && sql "select pg_reload_conf()" >/dev/null \
            && streams_from_new_primary; then
            if pcp_attach_node -h "$PCP_HOST" -p "$PCP_PORT" -U "$PCP_USER" -w -n "$node" \
                >/dev/null; then
                log "streams from node $new_primary ($new_host); attached"
            else
                log "streams from node $new_primary ($new_host); pcp_attach_node failed"
            fi
        else
            log "does not stream from node $new_primary ($new_host) within" \
                "$STREAM_WAIT s ($(first_line "$receiver")): left detached"
        fi
    elif [ "$recovery" = f ]; then
        log "is a primary (the old one?): left detached; rebuild it as a standby of" \
            "node $new_primary, then pcp_attach_node"
    else
        log "not reachable ($(first_line "$recovery")): left detached"
    fi
fi

exec "$HOOK" add "$new_primary"
