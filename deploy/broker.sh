# Sourced by deploy/demo.sh and the benches/*.sh scripts: a private Mosquitto
# started from deploy/mosquitto/insecure-loopback-demo.conf on a free loopback port, with its
# persistence in a given directory. (The packaged defaults drop QoS 1 messages
# for a slow subscriber.)

# A free loopback TCP port.
free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# start_broker DIR: starts the broker; sets PORT and BROKER (its pid) and
# returns once the port accepts connections.
start_broker() {
  PORT=$(free_port)
  # Started as root, mosquitto drops to its own user, which must be able to
  # write its persistence folder (mktemp -d makes DIR root-only).
  mkdir -p "$1/broker-data"
  if [ "$(id -u)" = 0 ] && id mosquitto >/dev/null 2>&1; then
    chmod 711 "$1"
    chown mosquitto "$1/broker-data"
  fi
  sed -e "s|^listener 1883 127.0.0.1|listener $PORT 127.0.0.1|" \
      -e "s|^persistence_location .*|persistence_location $1/broker-data/|" \
      deploy/mosquitto/insecure-loopback-demo.conf > "$1/mosquitto.conf"
  # Debian installs it in /usr/sbin, outside a normal user's PATH.
  local bin
  bin=$(command -v mosquitto || echo /usr/sbin/mosquitto)
  "$bin" -c "$1/mosquitto.conf" > "$1/mosquitto.log" 2>&1 &
  BROKER=$!
  for _ in $(seq 200); do
    (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && return 0
    sleep 0.05
  done
  echo "mosquitto did not start:" >&2; cat "$1/mosquitto.log" >&2; return 1
}
