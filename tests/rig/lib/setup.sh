# Rig set-up on L0 (sourced by tests/rig/run; bash). Everything here is idempotent
# and cached under $RIG_DIR; callers hold the set-up lock.

# Debian packages the rig needs on L0 (QEMU separately: setup_qemu).
# jq: scenario scripts in L1 read conduit's JSON output with L0's jq; libcap2-bin: capsh
# (faults drops CAP_IPC_LOCK).
RIG_PACKAGES=(busybox-static kmod cpio jq libcap2-bin)
# L1's emulator must be QEMU 10 or newer. With bookworm's 7.2, L1 crashed in runs with
# many short L2 lifetimes: "stack guard page was hit" in error_entry in the L2 VMM's vCPU
# thread, soft lockups in swapper and kworkers, L1 silent (4 of 9 api-leaks runs, and the
# teardown hangs of boot-pvh and host); with backports' 10.0 none in the runs since.
RIG_QEMU_MAJOR=10
# L1 initramfs modules (with their dependencies); L2's are for the guest drivers.
# A scenario's meta adds more with L1_EXTRA_MODULES="nvme ..." (loaded after these, so
# e.g. the nvme starts bound to L1's nvme driver unless BIND names it).
L1_MODULES=(kvm_amd vfio_pci vfio_iommu_type1 virtio_pci 9pnet_virtio 9p)
L2_MODULES=(nvme e1000e uio_pci_generic)

APT_UPDATED=0
apt_update_once() {
    [ "$APT_UPDATED" = 1 ] && return 0
    # A failing third-party source must not stop the rig: judge by what installs.
    run_logged timeout 300 apt-get update || log "apt-get update reported errors (ignored)"
    APT_UPDATED=1
}

# Install the Debian packages that are missing (needs root).
setup_packages() {
    local missing=() p
    for p in "${RIG_PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
    done
    [ ${#missing[@]} = 0 ] && return 0
    [ "$(id -u)" = 0 ] || { log "missing packages ${missing[*]} and not root"; return 1; }
    log "installing ${missing[*]}"
    apt_update_once
    export DEBIAN_FRONTEND=noninteractive
    run_logged timeout 900 apt-get install -y --no-install-recommends "${missing[@]}"
}

qemu_major() {
    qemu-system-x86_64 --version 2>/dev/null | sed -n 's/^QEMU emulator version \([0-9]*\).*/\1/p'
}

# QEMU >= RIG_QEMU_MAJOR (and the matching qemu-utils), from bookworm-backports on
# bookworm (the source is added as a file of its own; nothing else comes from it).
setup_qemu() {
    local major codename t=()
    major=$(qemu_major)
    [ -n "$major" ] && [ "$major" -ge "$RIG_QEMU_MAJOR" ] && return 0
    [ "$(id -u)" = 0 ] || { log "QEMU ${major:-none} installed, the rig needs >= $RIG_QEMU_MAJOR; not root"; return 1; }
    codename=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
    if [ "$codename" = bookworm ]; then
        if ! grep -rqs 'bookworm-backports' /etc/apt/sources.list /etc/apt/sources.list.d/; then
            log "adding bookworm-backports (for QEMU $RIG_QEMU_MAJOR) as /etc/apt/sources.list.d/conduit-rig-backports.sources"
            printf '%s\n' 'Types: deb' 'URIs: http://deb.debian.org/debian' 'Suites: bookworm-backports' \
                'Components: main' 'Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg' \
                > /etc/apt/sources.list.d/conduit-rig-backports.sources || return 1
            APT_UPDATED=0
        fi
        t=(-t bookworm-backports)
    fi
    log "installing QEMU >= $RIG_QEMU_MAJOR (found ${major:-none})"
    apt_update_once
    DEBIAN_FRONTEND=noninteractive run_logged timeout 900 \
        apt-get install -y --no-install-recommends "${t[@]}" qemu-system-x86 qemu-utils || return 1
    major=$(qemu_major)
    [ -n "$major" ] && [ "$major" -ge "$RIG_QEMU_MAJOR" ] ||
        { log "QEMU ${major:-none} after the install; the rig needs >= $RIG_QEMU_MAJOR"; return 1; }
}

# The stock Debian kernel (what linux-image-amd64 depends on), extracted to
# $RIG_DIR/kernel with its modules indexed. Sets KVER and DEBIAN_KERNEL.
setup_debian_kernel() {
    local dir=$RIG_DIR/kernel
    if [ ! -f "$dir/.complete" ]; then
        apt_update_once
        KVER=$(apt-cache depends linux-image-amd64 2>/dev/null |
            sed -n 's/.*Depends: linux-image-\([0-9].*-amd64\)$/\1/p' | head -n1)
        [ -n "$KVER" ] || { log "cannot find the kernel linux-image-amd64 depends on"; return 1; }
        log "downloading linux-image-$KVER"
        mkdir -p "$RIG_DIR/dl"
        ( cd "$RIG_DIR/dl" && rm -f "linux-image-${KVER}"_*.deb &&
            run_logged timeout 600 apt-get download "linux-image-$KVER" ) || return 1
        rm -rf "$dir.tmp" && mkdir -p "$dir.tmp" || return 1
        dpkg-deb -x "$RIG_DIR/dl/linux-image-${KVER}"_*.deb "$dir.tmp" || return 1
        /sbin/depmod -b "$dir.tmp" "$KVER" || return 1
        echo "$KVER" > "$dir.tmp/KVER"
        touch "$dir.tmp/.complete"
        rm -rf "$dir" && mv "$dir.tmp" "$dir" || return 1
        rm -f "$RIG_DIR/dl/linux-image-${KVER}"_*.deb
    fi
    KVER=$(cat "$dir/KVER")
    DEBIAN_KERNEL=$dir/boot/vmlinuz-$KVER
    [ -f "$DEBIAN_KERNEL" ] && setup_vmlinux "$DEBIAN_KERNEL" "$dir/vmlinux"
}

# setup_vmlinux BZIMAGE OUT: the ELF vmlinux inside the bzImage (for ELF/PVH boot tests),
# found by the magic of its compressed payload (xz, gzip or zstd) and decompressed once.
setup_vmlinux() {
    [ -f "$2" ] && return 0
    local entry magic tool off
    for entry in '\xfd\x37\x7a\x58\x5a\x00:xz -dc' '\x1f\x8b\x08:gzip -dc' '\x28\xb5\x2f\xfd:zstd -dc'; do
        magic=${entry%%:*} tool=${entry#*:}
        off=$(LC_ALL=C grep -aboP "$magic" "$1" 2>/dev/null | head -n1 | cut -d: -f1)
        [ -n "$off" ] || continue
        tail -c +$((off + 1)) "$1" | $tool 2>/dev/null > "$2.tmp"
        if [ "$(head -c 4 "$2.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ]; then
            mv "$2.tmp" "$2" && return 0
        fi
    done
    rm -f "$2.tmp"
    log "cannot extract vmlinux from $1"
    return 1
}

# Disk images with a known pattern in their first MiB (2048 sectors), 64 MiB sparse.
setup_disk_images() {
    local letter f s
    for letter in A C; do
        f=$RIG_DIR/disk-$letter.img
        [ -f "$f" ] && continue
        for ((s = 0; s < 2048; s++)); do rig_pattern "$letter" "$s"; done > "$f.tmp" &&
            truncate -s 64M "$f.tmp" && mv "$f.tmp" "$f" || return 1
    done
}

setup_all() {
    mkdir -p "$RIG_DIR/logs" "$RIG_DIR/runs" || return 1
    setup_packages || return 1
    setup_qemu || return 1
    setup_debian_kernel || return 1
    setup_disk_images || return 1
}

# add_modules KERNEL_ROOT KVER STAGING NAME...: copy modules and their
# dependencies into STAGING, listing them in load order in STAGING/etc/rig-modules.
add_modules() {
    local kroot=$1 kver=$2 root=$3 line f
    shift 3
    local m
    for m in "$@"; do
        /sbin/modprobe -d "$kroot" -S "$kver" --show-depends "$m" > "$root/.deps" || return 1
        while read -r line; do
            case $line in
                insmod\ *)
                    f=${line#insmod }; f=${f%% *}
                    mkdir -p "$root/lib/modules"
                    cp -n "$f" "$root/lib/modules/" || return 1
                    grep -qxF "/lib/modules/${f##*/}" "$root/etc/rig-modules" ||
                        echo "/lib/modules/${f##*/}" >> "$root/etc/rig-modules" ;;
            esac
        done < "$root/.deps"
        rm -f "$root/.deps"
    done
}

# busybox_root STAGING INIT: a minimal busybox root with INIT as /init.
busybox_root() {
    local root=$1
    rm -rf "$root" && mkdir -p "$root"/{bin,dev,proc,sys,tmp,etc,rig} || return 1
    cp /bin/busybox "$root/bin/busybox" && ln -s busybox "$root/bin/sh" || return 1
    cp "$2" "$root/init" && chmod +x "$root/init" || return 1
    : > "$root/etc/rig-modules"
}

pack_initrd() { ( cd "$1" && find . | cpio -o -H newc --quiet | gzip -1 ) > "$2"; }

# build_l1_initrd OUT: busybox + L1 modules of the Debian kernel (none for a
# self-built kernel with everything built in) + lib/l1-init.
build_l1_initrd() {
    local root=$RUN_DIR/l1-root mods=("${L1_MODULES[@]}" ${L1_EXTRA_MODULES:-})
    busybox_root "$root" "$RIG_SRC/lib/l1-init" || return 1
    if [ "$L1_KERNEL" = debian ]; then
        if [ "${RIG_BREAK:-}" = no-kvm-module ]; then
            log "RIG_BREAK=no-kvm-module: leaving kvm_amd out of the L1 initramfs"
            mods=("${mods[@]/kvm_amd/}")
        fi
        add_modules "$RIG_DIR/kernel" "$KVER" "$root" ${mods[@]} || return 1
    fi
    pack_initrd "$root" "$1" && rm -rf "$root"
}

# build_l2_initrd OUT: busybox + L2 modules + lib/l2-init + every scenario's l2.sh.
build_l2_initrd() {
    local root=$RUN_DIR/l2-root d
    busybox_root "$root" "$RIG_SRC/lib/l2-init" || return 1
    add_modules "$RIG_DIR/kernel" "$KVER" "$root" "${L2_MODULES[@]}" || return 1
    cp "$RIG_SRC/lib/guest.sh" "$root/rig/guest.sh" || return 1
    for d in "$RIG_SRC"/scenarios/*/; do
        [ -f "$d/l2.sh" ] || continue
        mkdir -p "$root/rig/scenarios/$(basename "$d")" &&
            cp -L "$d/l2.sh" "$root/rig/scenarios/$(basename "$d")/l2.sh" || return 1
    done
    pack_initrd "$root" "$1" && rm -rf "$root"
}
