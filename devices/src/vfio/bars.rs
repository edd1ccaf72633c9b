//! A passthrough device's BARs in the guest: each mmappable part of a BAR is mmapped from the
//! VFIO device fd and installed as a KVM memslot, so the guest reaches the device without
//! exits; only the pages holding the MSI-X table and PBA (and non-mmappable regions) trap.
//! The cost is one mmap and one memslot per area, whatever the BAR's size.

use std::ops::Range;
use std::sync::Arc;

use super::p2p::DmaArea;
use crate::vm_hooks::MemslotMapper;

/// One mmapped area of a BAR.
struct Area {
    /// Offset within the BAR.
    offset: u64,
    size: u64,
    host: *mut libc::c_void,
    slot: Option<u32>,
}

// SAFETY: the mapping is plain device memory owned by this struct; moving it between threads
// does not change who may access it.
unsafe impl Send for Area {}

/// The mmapped areas of one BAR and where they are in the guest.
pub struct BarMapping {
    /// BAR index.
    pub index: u8,
    /// Guest address of the BAR.
    pub guest_addr: u64,
    areas: Vec<Area>,
}

/// Errors while mapping a BAR.
#[derive(Debug, thiserror::Error)]
pub enum BarError {
    /// mmap of the VFIO region failed.
    #[error("{device}: cannot mmap BAR{bar} area {offset:#x}+{size:#x}: {source}")]
    Mmap {
        /// Device address.
        device: String,
        /// BAR index.
        bar: u8,
        /// Offset in the BAR.
        offset: u64,
        /// Size.
        size: u64,
        /// Underlying error.
        source: std::io::Error,
    },
    /// KVM refused the memslot.
    #[error("{device}: cannot install BAR{bar} at {gpa:#x} as a memslot: {reason}")]
    Memslot {
        /// Device address.
        device: String,
        /// BAR index.
        bar: u8,
        /// Guest address.
        gpa: u64,
        /// Why.
        reason: String,
    },
}

impl BarMapping {
    /// mmaps `areas` (offsets within the BAR) of the region at `region_offset` of `fd`.
    pub fn mmap(
        device: &str,
        fd: i32,
        index: u8,
        region_offset: u64,
        areas: &[Range<u64>],
    ) -> Result<Self, BarError> {
        let mut mapped = Vec::with_capacity(areas.len());
        for a in areas {
            let size = a.end - a.start;
            // SAFETY: a fresh shared mapping of the device region; the kernel checks offset
            // and size against the region; we own the result until munmap in Drop.
            let host = unsafe {
                libc::mmap(
                    std::ptr::null_mut(),
                    size as usize,
                    libc::PROT_READ | libc::PROT_WRITE,
                    libc::MAP_SHARED,
                    fd,
                    (region_offset + a.start) as libc::off_t,
                )
            };
            if host == libc::MAP_FAILED {
                return Err(BarError::Mmap {
                    device: device.to_string(),
                    bar: index,
                    offset: a.start,
                    size,
                    source: std::io::Error::last_os_error(),
                });
            }
            mapped.push(Area {
                offset: a.start,
                size,
                host,
                slot: None,
            });
        }
        Ok(Self {
            index,
            guest_addr: 0,
            areas: mapped,
        })
    }

    /// Installs the areas as memslots with the BAR at `guest_addr` (removing old ones).
    pub fn install(
        &mut self,
        device: &str,
        guest_addr: u64,
        mapper: &Arc<dyn MemslotMapper>,
    ) -> Result<(), BarError> {
        self.remove(mapper);
        self.guest_addr = guest_addr;
        for a in &mut self.areas {
            let gpa = guest_addr + a.offset;
            let slot = mapper
                .map(gpa, a.size, a.host as u64)
                .map_err(|e| BarError::Memslot {
                    device: device.to_string(),
                    bar: self.index,
                    gpa,
                    reason: e.0,
                })?;
            a.slot = Some(slot);
        }
        Ok(())
    }

    /// Removes the memslots (the mmaps stay).
    pub fn remove(&mut self, mapper: &Arc<dyn MemslotMapper>) {
        for a in &mut self.areas {
            if let Some(slot) = a.slot.take() {
                if let Err(e) = mapper.unmap(slot) {
                    log::warn!("BAR{} memslot {slot}: {e}", self.index);
                }
            }
        }
    }

    /// The mmapped areas, for DMA-mapping them (p2p).
    pub fn dma_areas(&self) -> Vec<DmaArea> {
        self.areas
            .iter()
            .map(|a| DmaArea {
                offset: a.offset,
                size: a.size,
                host_addr: a.host as u64,
            })
            .collect()
    }

    /// Bytes directly mapped.
    pub fn mapped_bytes(&self) -> u64 {
        self.areas.iter().map(|a| a.size).sum()
    }
}

impl Drop for BarMapping {
    fn drop(&mut self) {
        for a in &self.areas {
            // SAFETY: unmapping exactly what mmap returned; memslots were removed first by the
            // owner (VfioPciDevice::drop), so KVM no longer points into it.
            unsafe { libc::munmap(a.host, a.size as usize) };
        }
    }
}

/// The mmappable areas of a BAR: the region's sparse areas (or the whole BAR), minus the
/// pages that must trap, as page-aligned ranges.
pub fn mappable_areas(
    bar_size: u64,
    sparse: Option<&[Range<u64>]>,
    traps: &[Range<u64>],
    page_size: u64,
) -> Vec<Range<u64>> {
    let free = pci::sparse_areas(bar_size, traps, page_size).unwrap_or_default();
    let allowed: Vec<Range<u64>> = match sparse {
        Some(s) => s.to_vec(),
        None => std::iter::once(0..bar_size).collect(),
    };
    let mut out = Vec::new();
    for f in &free {
        for a in &allowed {
            let start = f.start.max(a.start.next_multiple_of(page_size));
            let end = f.end.min(a.end - a.end % page_size);
            if start < end {
                out.push(start..end);
            }
        }
    }
    out.sort_by_key(|r| r.start);
    out
}

#[cfg(test)]
#[allow(clippy::single_range_in_vec_init)] // one-range lists are the point of these cases
mod tests {
    use super::*;

    #[test]
    fn h200_bar0_traps_only_the_msix_pages() {
        // H200 BAR0: 16 MiB, MSI-X table (9 entries) at 0xB90000, PBA at 0xBA0000.
        let traps = [0xb9_0000..0xb9_0000 + 9 * 16, 0xba_0000..0xba_0008];
        let areas = mappable_areas(16 << 20, None, &traps, 4096);
        assert_eq!(
            areas,
            vec![0..0xb9_0000, 0xb9_1000..0xba_0000, 0xba_1000..0x100_0000]
        );
    }

    #[test]
    fn sparse_capability_limits_what_is_mapped() {
        let areas = mappable_areas(
            0x4000,
            Some(&[0x0..0x1000, 0x3000..0x4000]),
            &[(0x3000..0x3010)],
            4096,
        );
        assert_eq!(areas, [(0..0x1000)]);
    }

    #[test]
    fn a_256_gib_bar_is_one_area() {
        let areas = mappable_areas(256 << 30, None, &[], 4096);
        assert_eq!(areas, [(0..256 << 30)]);
    }
}
