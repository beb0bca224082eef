#!/bin/sh
# One-off setup of deploy/compose.yaml's three hubs: makes each hub's certificate in its volume
# (`hub identity`), then writes each hub's configuration with the other two as peers, pinned
# by their certificates. Runs again harmlessly: certificates are kept, configurations rewritten.
set -eu
pin() { /usr/local/bin/hub --data-dir "/data/$1" identity | sed -n 's/^pin: *//p'; }
for h in a b c; do
    install -d -m 0700 -o 10001 -g 10001 "/data/$h"
done
PIN_A=$(pin a); PIN_B=$(pin b); PIN_C=$(pin c)
chown -R 10001:10001 /data/a /data/b /data/c
peer() { # name address pin domain
    printf '\n[[peers]]\nname = "%s"\naddress = "%s:7447"\npin = "%s"\ndomains = ["%s"]\nprovider = true\n' "$1" "$2" "$3" "$4"
}
write() { # hub other1 other2 (each as name:address:pin)
    name=$1; shift
    {
        printf '[hub]\nname = "hub-%s"\ndomains = ["%s.example"]\n' "$name" "$name"
        printf '\n[quic]\nlisten = "0.0.0.0:7447"\n[admin]\nlisten = "0.0.0.0:7448"\n[metrics]\nlisten = "0.0.0.0:7449"\n'
        for other in "$@"; do
            IFS=: read -r o address p <<OTHER
$other
OTHER
            peer "hub-$o" "$address" "$p" "$o.example"
        done
    } > "/config/hub-$name.toml"
}
write a "b:172.28.0.12:$PIN_B" "c:172.28.0.13:$PIN_C"
write b "a:172.28.0.11:$PIN_A" "c:172.28.0.13:$PIN_C"
write c "a:172.28.0.11:$PIN_A" "b:172.28.0.12:$PIN_B"
chmod 0644 /config/*.toml
echo "compose-setup: hub-a $PIN_A, hub-b $PIN_B, hub-c $PIN_C"
