#!/bin/bash
# manage-reference.sh - the "manage.sh way", rebuilt for benchmarks and the lab.
#
# Why this exists: bench/hook_latency and bench/failover compare pgpool-anycast-hook
# with the shell approach it replaces. This script is written for them (it is not the
# article's manage.sh) but starts the same external programs in the same situations,
# so its run time and its behaviour stand for the original:
#
#   add   -> head -n1 STATUS, ip -br address show dev IFACE, grep, [ip address add], logger
#   del   -> ip -br address show dev IFACE, grep, [ip address del], logger
#   clean -> test -w, head -n1 STATUS, test, [rm STATUS], logger
#   standby node (NODE_ID != REF_PRIMARY), any action -> logger only
#
# Interface (stable; bench/failover relies on it):
#   manage-reference.sh add|del|clean NODE_ID
# Settings, from the environment:
#   REF_ADDRESS      address/prefix to manage   (default 198.18.2.0/32)
#   REF_IFACE        interface holding it       (default lo)
#   REF_STATUS_FILE  pgpool_status path         (default /var/log/postgresql/pgpool_status)
#   REF_PRIMARY      the one node id acted on   (default 0)
#
# Semantics, kept on purpose including the old defects (they are what is being replaced):
#   - only NODE_ID == REF_PRIMARY does anything (string comparison, no trimming);
#   - add: adds the address when the status file is unreadable or its first line is
#     exactly "up", and only if `grep` does not already find the address text in
#     `ip -br` output (a substring/regex match, not an exact one);
#   - del: removes the address when the same grep finds it;
#   - clean: deletes (no copy) a writable status file whose first line is not "up";
#   - every run writes one `logger` line and exits 0, whatever happened.
# Usage errors print one line and also exit 0, as the original did.

address=${REF_ADDRESS:-198.18.2.0/32}
iface=${REF_IFACE:-lo}
status_file=${REF_STATUS_FILE:-/var/log/postgresql/pgpool_status}
primary=${REF_PRIMARY:-0}

if [ $# -ne 2 ]; then
    echo "usage: $0 add|del|clean NODE_ID"
    exit 0
fi
action=$1
node=$2
outcome="node $node is not primary $primary, nothing done"

address_listed() {
    ip -br address show dev "$iface" | grep -q -- "$address"
}

if [ "$node" == "$primary" ]; then
    case "$action" in
        add)
            if [ ! -r "$status_file" ] || [ "$(head -n1 "$status_file")" == "up" ]; then
                outcome="ensure $address on $iface"
                address_listed || ip address add "$address" dev "$iface"
            else
                outcome="primary not up in $status_file, address not added"
            fi
            ;;
        del)
            outcome="ensure $address gone from $iface"
            address_listed && ip address del "$address" dev "$iface"
            ;;
        clean)
            outcome="drop $status_file unless its first line is up"
            /usr/bin/test -w "$status_file" \
                && /usr/bin/test "up" != "$(head -n1 "$status_file")" \
                && rm -f -- "$status_file"
            ;;
        *)
            outcome="unknown action"
            echo "unknown action '$action': use add, del or clean"
            ;;
    esac
fi

logger -t manage-reference "action=$action node=$node: $outcome"
exit 0
