# Sourced by the benches/*.sh scripts: reading a running emtrack's metrics.
# Needs HTTP (its metrics port).

# metric NAME: the value of an unlabelled metric.
metric() { curl -s "http://127.0.0.1:$HTTP/metrics" | awk -v n="$1" '$1 == n { print $2 }'; }

# now: wall-clock seconds, with nanoseconds.
now() { date +%s.%N; }

# wait_acked MESSAGES DEADLINE_S: until emtrack has acked that many messages.
wait_acked() {
  local end=$(( $(date +%s) + $2 ))
  while :; do
    local a; a=$(metric emtrack_messages_acked_total); a=${a%.*}
    [ "${a:-0}" -ge "$1" ] && return 0
    [ "$(date +%s)" -ge $end ] && { echo "only ${a:-0} of $1 acked" >&2; return 1; }
    sleep 0.05
  done
}
