# Shared settings of scripts/janus/{setup,start,stop}; sourced, not run. Override with the environment.
# The benchmark's Janus lives in its own network namespace behind a veth pair, because Janus skips loopback
# interfaces when it gathers ICE candidates (DESIGN.md, "Machine facts"): inside the namespace its one candidate is
# the veth address, which the synthetic sites on the host side reach directly.
NETNS=${DIEMCAU_JANUS_NETNS:-diemcau-bench}
VETH_HOST=${DIEMCAU_JANUS_VETH_HOST:-dcb-host}
VETH_NS=${DIEMCAU_JANUS_VETH_NS:-dcb-janus}
HOST_IP=${DIEMCAU_JANUS_HOST_IP:-10.77.0.1}
NS_IP=${DIEMCAU_JANUS_NS_IP:-10.77.0.2}
WS_PORT=${DIEMCAU_JANUS_WS_PORT:-8188}
RTP_PORTS=${DIEMCAU_JANUS_RTP_PORTS:-20000-40000}
ROOM=${DIEMCAU_JANUS_ROOM:-1234}
NOFILE=${DIEMCAU_JANUS_NOFILE:-20000}
# true: Janus trickles its candidates (`trickle` messages) instead of putting them in its SDP.
FULL_TRICKLE=${DIEMCAU_JANUS_FULL_TRICKLE:-false}

die() { echo "janus: $*" >&2; exit 1; }

# The namespace and the veth pair exist and carry the addresses.
netns_ready() {
    ip netns list 2>/dev/null | grep -qw "^$NETNS" &&
        ip -br addr show dev "$VETH_HOST" 2>/dev/null | grep -q "$HOST_IP/24" &&
        ip netns exec "$NETNS" ip -br addr show dev "$VETH_NS" 2>/dev/null | grep -q "$NS_IP/24"
}

# Deletes the namespace (its end of the veth pair goes with it, and so the host end), if nothing runs in it.
netns_delete() {
    if ip netns list 2>/dev/null | grep -qw "^$NETNS"; then
        local pids
        pids=$(ip netns pids "$NETNS" 2>/dev/null || true)
        [ -z "$pids" ] || { echo "janus: not deleting $NETNS, processes still in it: $pids" >&2; return 1; }
        ip netns del "$NETNS"
    fi
    ip link del "$VETH_HOST" 2>/dev/null || true
}
