#!/bin/sh
# Boots a throwaway systemd (PID 1 of its own PID and mount namespaces) that runs
# resolverd.service, to try the unit's Type=notify, watchdog, reload, restart rules and
# hardening for real on a machine that does not boot with systemd (a CI box, a container).
#
#   sudo systemd/try-under-systemd.sh /opt/resolverd/bin/resolverd resolverd.toml
#
# It prints the command prefix that runs a command inside, e.g.
#   nsenter -t PID -m -p -r -w systemctl status resolverd
# and `kill -9 PID` ends it all (a PID namespace ends with its first process; plain `kill`
# makes systemd re-execute itself). Everything it changes lives in an overlay of / on a tmpfs:
# the host's files stay as they were (systemd-tmpfiles would otherwise empty the host's /tmp). It
# shares the host's kernel, /dev (so /dev/shm) and network; the units that would change the
# kernel (sysctl, binfmt, modules) are masked. The resolverd executable must not live under
# /home or /root (ProtectHome=yes hides them), nor use a Python that does.
set -eu
[ $# -eq 2 ] || { echo "usage: $0 RESOLVERD_EXECUTABLE CONFIG.toml" >&2; exit 64; }
executable=$(realpath "$1")
config=$(realpath "$2")
units=$(dirname "$(realpath "$0")")
[ -x "$executable" ] || { echo "$executable is not executable" >&2; exit 66; }

boot() {
    work=/mnt  # the tmpfs hides it in this mount namespace only
    mkdir -p "$work"
    mount -t tmpfs tmpfs "$work"
    mkdir "$work/upper" "$work/work" "$work/root"
    mount -t overlay overlay -o "lowerdir=/,upperdir=$work/upper,workdir=$work/work" "$work/root"
    root=$work/root
    mount -t proc proc "$root/proc"
    mount --rbind /sys "$root/sys"
    mount --rbind /dev "$root/dev"
    mkdir -p "$root/etc/systemd/system" "$root/etc/resolverd" "$root/usr/lib/sysusers.d"
    sed "s#^ExecStart=/usr/bin/resolverd #ExecStart=$executable #" "$units/resolverd.service" \
        > "$root/etc/systemd/system/resolverd.service"
    printf '[Unit]\nDescription=resolverd under a throwaway systemd\nWants=resolverd.service\n' \
        > "$root/etc/systemd/system/try-resolverd.target"
    cp "$config" "$root/etc/resolverd/resolverd.toml"
    cp "$units/sysusers.d-resolverd.conf" "$root/usr/lib/sysusers.d/resolverd.conf"
    systemd-sysusers --root="$root" >/dev/null
    for unit in systemd-sysctl.service systemd-binfmt.service systemd-modules-load.service \
        proc-sys-fs-binfmt_misc.automount kmod-static-nodes.service systemd-firstboot.service \
        systemd-repart.service systemd-ask-password-console.path; do
        ln -sf /dev/null "$root/etc/systemd/system/$unit"
    done
    exec chroot "$root" env container=other /lib/systemd/systemd --system \
        --unit=try-resolverd.target
}

if [ "${TRY_UNDER_SYSTEMD_INSIDE:-}" = 1 ]; then
    boot
fi
TRY_UNDER_SYSTEMD_INSIDE=1 setsid unshare --pid --fork --mount --propagation private \
    "$0" "$executable" "$config" </dev/null >/dev/null 2>&1 &
for _ in $(seq 50); do
    pid=$(pgrep -n -f -- "--unit=try-resolverd.target" || true)
    [ -n "$pid" ] && break
    sleep 0.1
done
[ -n "$pid" ] || { echo "systemd did not start" >&2; exit 69; }
echo "systemd is PID $pid; run commands inside with: nsenter -t $pid -m -p -r -w COMMAND"
