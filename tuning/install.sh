#!/bin/sh
# Install oxit as a systemd service on Debian or any systemd host:
#   the binary in /usr/local/bin, a system user `oxit`, /etc/oxit (torrc,
#   instances/), /var/lib/oxit (keys and state, 0700) and /var/log/oxit,
#   and the units oxit.service and oxit@.service.
#
#   cargo build --release && sudo tuning/install.sh [path/to/oxit]
#
# Then either write /etc/oxit/torrc and `systemctl enable --now oxit`, or,
# for several relays, /etc/oxit/instances/NAME/torrc and
# `systemctl enable --now oxit@NAME`. Nothing is started by this script,
# and an existing torrc is never overwritten.
set -eu
cd "$(dirname "$0")/.."
bin=${1:-target/release/oxit}
[ -x "$bin" ] || { echo "no oxit binary at $bin (cargo build --release first)" >&2; exit 1; }
install -m 0755 "$bin" /usr/local/bin/oxit
if ! getent passwd oxit >/dev/null; then
    useradd --system --user-group --home-dir /var/lib/oxit --no-create-home \
        --shell /usr/sbin/nologin oxit
fi
install -d -m 0755 /etc/oxit /etc/oxit/instances
install -d -m 0700 -o oxit -g oxit /var/lib/oxit
install -d -m 0750 -o oxit -g adm /var/log/oxit
install -d -m 0755 /usr/local/share/doc/oxit
install -m 0644 README.md /usr/local/share/doc/oxit/README.md
install -m 0644 tuning/oxit.service tuning/oxit@.service /etc/systemd/system/
if [ ! -e /etc/oxit/torrc ]; then
    cat > /etc/oxit/torrc <<'TORRC'
# A starting point: set ORPort, Nickname, ContactInfo and your ExitPolicy.
ORPort 443
Nickname oxitExit
ContactInfo you@example.org
ExitRelay 1
Log notice syslog
TORRC
    chmod 0644 /etc/oxit/torrc
fi
systemctl daemon-reload 2>/dev/null || true
echo "installed; edit /etc/oxit/torrc, then: systemctl enable --now oxit"
