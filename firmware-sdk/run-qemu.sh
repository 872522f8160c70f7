#!/usr/bin/env bash
# Runs one firmware image on QEMU's mps2-an386 and exits with the firmware's status.
#
#   firmware-sdk/run-qemu.sh golden              # golden vectors + envelope verify
#   firmware-sdk/run-qemu.sh flash               # boot counter in ./fleet-flash.bin
#   firmware-sdk/run-qemu.sh agent 1883          # the agent; UART0 -> 127.0.0.1:1883
#
# The flash file (fleet-flash.bin) is read and written in the current directory.
# `cargo test` in firmware-sdk/ runs all of these with assertions; this is for hands.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
image="${1:?usage: run-qemu.sh IMAGE [BROKER_PORT]}"
port="${2:-}"
if ! command -v qemu-system-arm >/dev/null; then
    echo "qemu-system-arm is not installed: apt-get install -y qemu-system-arm" >&2
    exit 2
fi
(cd "$here" && cargo fw)
target_dir="${CARGO_TARGET_DIR:-$here/target}"
serial=(-serial null)
# A socket chardev that dials again a second after the broker drops the connection
# (plain `-serial tcp:` stays disconnected for good).
if [ -n "$port" ]; then
    serial=(-chardev "socket,id=link,host=127.0.0.1,port=$port,reconnect=1" -serial chardev:link)
fi
exec qemu-system-arm -M mps2-an386 -display none -monitor none \
    -semihosting-config enable=on,target=native "${serial[@]}" \
    -kernel "$target_dir/thumbv7em-none-eabihf/release/$image"
