# The iommufd L1 kernel (sourced by tests/rig/run; bash). Debian's binary kernels
# lack CONFIG_IOMMUFD, so it is built from Debian's linux-source-6.12 package with
# kernel/iommufd.config. It lives outside the checkout, keyed by the source
# package version and the config, so fresh clones on the same machine re-use it.

KERNEL_CACHE=${RIG_KERNEL_CACHE:-/var/cache/conduit-rig}
KERNEL_SOURCE_PKG=linux-source-6.12
KERNEL_CONFIG=$RIG_SRC/kernel/iommufd.config
KERNEL_BUILD_DEPS=(build-essential flex bison bc libelf-dev libssl-dev xz-utils)

config_hash() { sha256sum "$KERNEL_CONFIG" | cut -c1-12; }

# The version of linux-source-6.12 apt would download (empty if apt knows none).
kernel_source_version() {
    apt-cache show "$KERNEL_SOURCE_PKG" 2>/dev/null | sed -n 's/^Version: //p' | sort -V | tail -n1
}

# iommufd_kernel_image: print the cached bzImage for the current config, the exact
# package version when apt knows it, else the newest cached one with this config.
iommufd_kernel_image() {
    local hash ver f
    hash=$(config_hash)
    ver=$(kernel_source_version)
    if [ -n "$ver" ] && [ -f "$KERNEL_CACHE/kernel-$ver-$hash/bzImage" ]; then
        echo "$KERNEL_CACHE/kernel-$ver-$hash/bzImage"
        return 0
    fi
    f=$(ls -d "$KERNEL_CACHE"/kernel-*-"$hash"/bzImage 2>/dev/null | sort -V | tail -n1)
    [ -n "$f" ] && echo "$f"
}

# build_iommufd_kernel: download, configure and build (~19 min on 2 cores).
build_iommufd_kernel() {
    mkdir -p "$KERNEL_CACHE" || return 1
    (
        flock -w 7200 9 || exit 1
        apt_update_once
        local ver hash out work missing=() p
        ver=$(kernel_source_version)
        [ -n "$ver" ] || { log "apt knows no $KERNEL_SOURCE_PKG"; exit 1; }
        hash=$(config_hash)
        out=$KERNEL_CACHE/kernel-$ver-$hash
        [ -f "$out/bzImage" ] && { log "already built: $out/bzImage"; exit 0; }
        for p in "${KERNEL_BUILD_DEPS[@]}"; do
            dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
        done
        if [ ${#missing[@]} != 0 ]; then
            export DEBIAN_FRONTEND=noninteractive
            run_logged apt-get install -y --no-install-recommends "${missing[@]}" || exit 1
        fi
        work=$KERNEL_CACHE/build-$$
        rm -rf "$work" && mkdir -p "$work" && cd "$work" || exit 1
        log "building the iommufd L1 kernel from $KERNEL_SOURCE_PKG $ver in $work"
        run_logged apt-get download "$KERNEL_SOURCE_PKG=$ver" &&
            dpkg-deb -x "$KERNEL_SOURCE_PKG"_*.deb pkg &&
            tar xJf pkg/usr/src/"$KERNEL_SOURCE_PKG".tar.xz || exit 1
        cd "$KERNEL_SOURCE_PKG" || exit 1
        run_logged make defconfig &&
            ./scripts/config $(grep -v '^#' "$KERNEL_CONFIG") &&
            run_logged make olddefconfig || exit 1
        for p in KVM_AMD VFIO_PCI IOMMUFD VFIO_DEVICE_CDEV INTEL_IOMMU IRQ_REMAP NET_9P_VIRTIO 9P_FS; do
            grep -qx "CONFIG_$p=y" .config || { log "CONFIG_$p=y did not stick"; exit 1; }
        done
        run_logged timeout 7200 make -j"$(nproc)" bzImage || exit 1
        mkdir -p "$out.tmp" && cp arch/x86/boot/bzImage .config "$out.tmp/" &&
            cp "$KERNEL_CONFIG" "$out.tmp/iommufd.config" && mv "$out.tmp" "$out" || exit 1
        cd / && rm -rf "$work"
        log "built $out/bzImage"
    ) 9> "$KERNEL_CACHE/.build.lock"
}
