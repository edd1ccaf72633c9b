//! Guest RAM: anonymous (optionally 2 MiB hugepage) mappings registered as KVM memslots.

use std::path::Path;

use kvm_bindings::kvm_userspace_memory_region;
use kvm_ioctls::VmFd;
use vm_memory::{GuestAddress, GuestMemoryBackend, GuestMemoryRegion, GuestRegionMmap, MmapRegion};

/// Guest memory as the rest of the VMM sees it.
pub type GuestMemoryMmap = vm_memory::GuestMemoryMmap<()>;

const HUGEPAGE_SIZE: u64 = 2 << 20;

/// Errors while creating or registering guest memory.
#[derive(Debug, thiserror::Error)]
pub enum MemoryError {
    /// The host does not have that much memory available.
    #[error("guest memory of {requested_mib} MiB is more than the host can give ({available_mib} MiB available per /proc/meminfo): lower --memory")]
    HostTooSmall {
        /// What the VM asked for.
        requested_mib: u64,
        /// MemAvailable of the host.
        available_mib: u64,
    },
    /// Not enough free 2 MiB hugepages.
    #[error("--hugepages needs {needed} free 2 MiB hugepages but the host has {free} free: echo {needed} > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages (as root), or drop --hugepages")]
    NotEnoughHugepages {
        /// Pages the guest needs.
        needed: u64,
        /// Pages free on the host.
        free: u64,
    },
    /// Guest memory size not a multiple of 2 MiB with hugepages.
    #[error("with --hugepages the guest memory region at {addr:#x} ({size} bytes) must be a multiple of 2 MiB")]
    HugepageAlignment {
        /// Region start.
        addr: u64,
        /// Region size.
        size: u64,
    },
    /// mmap of guest memory failed.
    #[error("cannot map {size} bytes of guest memory at {addr:#x}: {source}")]
    Mmap {
        /// Region start.
        addr: u64,
        /// Region size.
        size: u64,
        /// Underlying error.
        source: vm_memory::mmap::MmapRegionError,
    },
    /// Assembling the regions failed.
    #[error("invalid guest memory layout: {0}")]
    Layout(#[from] vm_memory::GuestRegionCollectionError),
    /// Region at an unusable address.
    #[error("invalid guest memory region at {0:#x}")]
    Region(u64),
    /// KVM refused a memslot.
    #[error("KVM refused memslot {slot} ({size} bytes at {addr:#x}): {source}")]
    Memslot {
        /// Slot number.
        slot: u32,
        /// Guest-physical start.
        addr: u64,
        /// Size.
        size: u64,
        /// Underlying error.
        source: kvm_ioctls::Error,
    },
}

/// Reads a `Key: N kB` field from a meminfo-style file, in bytes.
fn meminfo_field(meminfo: &str, key: &str) -> Option<u64> {
    meminfo.lines().find_map(|l| {
        let rest = l.strip_prefix(key)?.strip_prefix(':')?;
        let kb: u64 = rest.split_whitespace().next()?.parse().ok()?;
        Some(kb * 1024)
    })
}

/// Checks the guest size against the host's available memory (and hugepages when asked).
pub fn check_host_can_give(
    ram_bytes: u64,
    hugepages: bool,
    proc_meminfo: &Path,
    free_hugepages: &Path,
) -> Result<(), MemoryError> {
    if hugepages {
        let free = std::fs::read_to_string(free_hugepages)
            .ok()
            .and_then(|s| s.trim().parse::<u64>().ok())
            .unwrap_or(0);
        let needed = ram_bytes.div_ceil(HUGEPAGE_SIZE);
        if free < needed {
            return Err(MemoryError::NotEnoughHugepages { needed, free });
        }
        return Ok(());
    }
    if let Some(available) = std::fs::read_to_string(proc_meminfo)
        .ok()
        .and_then(|m| meminfo_field(&m, "MemAvailable"))
    {
        if ram_bytes > available {
            return Err(MemoryError::HostTooSmall {
                requested_mib: ram_bytes >> 20,
                available_mib: available >> 20,
            });
        }
    }
    Ok(())
}

/// Maps the guest RAM regions.
pub fn create(
    ranges: &[(GuestAddress, usize)],
    hugepages: bool,
) -> Result<GuestMemoryMmap, MemoryError> {
    let mut regions = Vec::with_capacity(ranges.len());
    for &(addr, size) in ranges {
        let mut flags = libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE;
        if hugepages {
            if !(size as u64).is_multiple_of(HUGEPAGE_SIZE) {
                return Err(MemoryError::HugepageAlignment {
                    addr: addr.0,
                    size: size as u64,
                });
            }
            flags |= libc::MAP_HUGETLB;
        }
        let map = MmapRegion::build(None, size, libc::PROT_READ | libc::PROT_WRITE, flags)
            .map_err(|source| MemoryError::Mmap {
                addr: addr.0,
                size: size as u64,
                source,
            })?;
        regions.push(GuestRegionMmap::new(map, addr).ok_or(MemoryError::Region(addr.0))?);
    }
    Ok(GuestMemoryMmap::from_regions(regions)?)
}

/// Registers every RAM region as a KVM memslot (slots 0..n); returns the next free slot.
pub fn register_memslots(vm: &VmFd, mem: &GuestMemoryMmap) -> Result<u32, MemoryError> {
    let mut slot = 0u32;
    for region in mem.iter() {
        let r = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: region.start_addr().0,
            memory_size: region.len(),
            userspace_addr: region.as_ptr() as u64,
        };
        // SAFETY: the host range is a live mapping owned by `mem`, which outlives the VM: the
        // VM fd is dropped before guest memory in every teardown path.
        unsafe { vm.set_user_memory_region(r) }.map_err(|source| MemoryError::Memslot {
            slot,
            addr: r.guest_phys_addr,
            size: r.memory_size,
            source,
        })?;
        slot += 1;
    }
    Ok(slot)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write_tmp(name: &str, content: &str) -> std::path::PathBuf {
        let p = std::env::temp_dir().join(format!("conduit-{}-{name}", std::process::id()));
        std::fs::write(&p, content).unwrap();
        p
    }

    #[test]
    fn refuses_more_than_available_and_names_sizes() {
        let mi = write_tmp(
            "meminfo",
            "MemTotal: 2048000 kB\nMemAvailable: 1048576 kB\n",
        );
        let hp = write_tmp("hp", "0\n");
        assert!(check_host_can_give(512 << 20, false, &mi, &hp).is_ok());
        let e = check_host_can_give(2 << 30, false, &mi, &hp).unwrap_err();
        assert!(
            e.to_string().contains("2048 MiB") && e.to_string().contains("1024 MiB"),
            "{e}"
        );
        let e = check_host_can_give(512 << 20, true, &mi, &hp).unwrap_err();
        assert!(
            e.to_string().contains("needs 256 free 2 MiB hugepages"),
            "{e}"
        );
        std::fs::write(&hp, "300\n").unwrap();
        assert!(check_host_can_give(512 << 20, true, &mi, &hp).is_ok());
    }

    #[test]
    fn maps_regions_at_their_guest_addresses() {
        let mem = create(
            &[(GuestAddress(0), 1 << 20), (GuestAddress(1 << 32), 2 << 20)],
            false,
        )
        .unwrap();
        assert_eq!(mem.num_regions(), 2);
        assert!(mem.address_in_range(GuestAddress((1 << 32) + 4096)));
        assert!(!mem.address_in_range(GuestAddress(2 << 20)));
        let e = create(&[(GuestAddress(0), 3 << 20 | 4096)], true).unwrap_err();
        assert!(matches!(e, MemoryError::HugepageAlignment { .. }));
    }
}
