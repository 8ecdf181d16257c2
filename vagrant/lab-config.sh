#!/bin/sh
# Write one lab VM's argoctl config and keys exactly as provisioning does
# (provision.sh calls this; tests/unit/test_vagrant.py runs it too).
#
#   lab-config.sh HOST TUNNEL LAN_INTERFACE DIR     env ARGOCTL_LAB_SEED
#   env ARGOCTL_RELAYS=relay1: a lab with only these relays (vagrant/lab_subset.py)
#
# DIR/lab/ gets the generator's output (HOST.toml, keys/), DIR/argoctl.toml
# the host's config, validated. The origin gets only keys/responder.key.
set -eu
HOST=$1 TUNNEL=$2 LANIF=$3 DIR=$4
LAB=$DIR/lab
: "${ARGOCTL_LAB_SEED:?lab secret missing (the Vagrantfile passes it)}"

install -d -m 0700 "$DIR" "$LAB"
seed=$DIR/lab-seed
(umask 077; printf '%s\n' "$ARGOCTL_LAB_SEED" > "$seed")
# Keys derive from the seed, so regenerating them is exact; this also drops
# keys left by an older seed (the generator reuses existing key files).
rm -rf "$LAB/keys"
case "${ARGOCTL_RELAYS:-relay1,relay2}" in
relay1,relay2|relay2,relay1)
    set -- lab gen-configs --underlay vagrant --tunnel "$TUNNEL" --out "$LAB" --host "$HOST" --seed-file "$seed"
    [ "$LANIF" = - ] || set -- "$@" --lan-interface "$LANIF"
    argoctl "$@" ;;
*)  # argoctl's own interpreter (the venv's), found through its entry point
    python=$(dirname "$(readlink -f "$(command -v argoctl)")")/python
    "$python" "$(dirname "$0")/lab_subset.py" "$HOST" "$TUNNEL" "$LANIF" "$LAB" "$seed" "$ARGOCTL_RELAYS" ;;
esac
if [ -f "$LAB/$HOST.toml" ]; then
    install -m 0644 "$LAB/$HOST.toml" "$DIR/argoctl.toml"
    argoctl validate "$DIR/argoctl.toml"
fi
