//! Guest-physical memory plan: where RAM goes around the 32-bit hole, and where the PCI
//! windows and ECAM sit.

use vm_memory::GuestAddress;

use crate::layout::{
    MEM_32BIT_GAP_START, MIN_RAM_SIZE, PCI_ECAM_SIZE, PCI_ECAM_START, PCI_MMIO32_SIZE,
    PCI_MMIO32_START, PCI_MMIO64_ALIGN, PCI_MMIO64_MIN_SIZE, PCI_MMIO64_TOP_RESERVE,
    RAM_64BIT_START,
};

/// Smallest and largest physical address widths `MemoryLayout::plan` accepts (every x86-64
/// CPU has at least 36; 52 is the architectural maximum).
const PHYS_BITS_RANGE: std::ops::RangeInclusive<u8> = 36..=52;

/// Errors of planning the guest memory layout.
#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum Error {
    /// RAM below the supported minimum.
    #[error("guest memory of {ram_bytes} bytes is too small: at least {min} MiB are needed", min = MIN_RAM_SIZE >> 20)]
    RamTooSmall {
        /// Requested RAM size.
        ram_bytes: u64,
    },
    /// RAM not a whole number of pages.
    #[error("guest memory of {ram_bytes} bytes is not a multiple of 4 KiB")]
    RamNotPageAligned {
        /// Requested RAM size.
        ram_bytes: u64,
    },
    /// Physical address width outside what x86-64 can have.
    #[error(
        "guest physical address width of {phys_bits} bits is not supported (expected 36 to 52)"
    )]
    PhysBits {
        /// Requested width.
        phys_bits: u8,
    },
    /// RAM plus the 64-bit PCI window do not fit below `1 << phys_bits`.
    #[error(
        "guest memory of {ram_bytes} bytes does not fit in a {phys_bits}-bit guest-physical \
         address space with the PCI windows: at most {max_ram_bytes} bytes can be given"
    )]
    RamTooLarge {
        /// Requested RAM size.
        ram_bytes: u64,
        /// Physical address width.
        phys_bits: u8,
        /// Largest RAM size that would fit.
        max_ram_bytes: u64,
    },
}

/// A guest-physical address range `[base, base + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Window {
    /// First address.
    pub base: u64,
    /// Length in bytes (non-zero).
    pub size: u64,
}

impl Window {
    /// First address past the window.
    pub fn end(&self) -> u64 {
        self.base + self.size
    }

    /// Last address inside the window.
    pub fn last(&self) -> u64 {
        self.base + self.size - 1
    }
}

/// The guest-physical memory map of a VM: RAM, the 32-bit hole contents and the 64-bit PCI
/// window. Build it with [`MemoryLayout::plan`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MemoryLayout {
    ram_bytes: u64,
    phys_bits: u8,
    low_ram: Window,
    high_ram: Option<Window>,
    mmio32: Window,
    ecam: Window,
    mmio64: Window,
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    Some(value.checked_add(align - 1)? & !(align - 1))
}

impl MemoryLayout {
    /// Plans `ram_bytes` of RAM in a guest whose physical address width is `phys_bits`.
    ///
    /// RAM fills `[0, min(ram, MEM_32BIT_GAP_START))` and continues at 4 GiB. The 64-bit PCI
    /// window starts at the first `PCI_MMIO64_ALIGN` boundary at or above both 4 GiB and the
    /// end of RAM, and extends to `(1 << phys_bits) - PCI_MMIO64_TOP_RESERVE`, so naturally
    /// aligned BARs of hundreds of GiB fit in it.
    pub fn plan(ram_bytes: u64, phys_bits: u8) -> Result<Self, Error> {
        if !PHYS_BITS_RANGE.contains(&phys_bits) {
            return Err(Error::PhysBits { phys_bits });
        }
        if ram_bytes < MIN_RAM_SIZE {
            return Err(Error::RamTooSmall { ram_bytes });
        }
        if !ram_bytes.is_multiple_of(0x1000) {
            return Err(Error::RamNotPageAligned { ram_bytes });
        }
        let top = (1u64 << phys_bits) - PCI_MMIO64_TOP_RESERVE;
        // Largest RAM whose end, aligned up, still leaves the minimum 64-bit window.
        let max_ram_bytes = top - PCI_MMIO64_MIN_SIZE - RAM_64BIT_START + MEM_32BIT_GAP_START;
        let too_large = Error::RamTooLarge {
            ram_bytes,
            phys_bits,
            max_ram_bytes,
        };

        let low_size = ram_bytes.min(MEM_32BIT_GAP_START);
        let high_size = ram_bytes - low_size;
        let high_ram = (high_size > 0).then_some(Window {
            base: RAM_64BIT_START,
            size: high_size,
        });
        let ram_end = match high_ram {
            Some(w) => w.base.checked_add(w.size).ok_or(too_large.clone())?,
            None => low_size,
        };
        let mmio64_base =
            align_up(ram_end.max(RAM_64BIT_START), PCI_MMIO64_ALIGN).ok_or(too_large.clone())?;
        if mmio64_base
            .checked_add(PCI_MMIO64_MIN_SIZE)
            .is_none_or(|end| end > top)
        {
            return Err(too_large);
        }

        Ok(MemoryLayout {
            ram_bytes,
            phys_bits,
            low_ram: Window {
                base: 0,
                size: low_size,
            },
            high_ram,
            mmio32: Window {
                base: PCI_MMIO32_START,
                size: PCI_MMIO32_SIZE,
            },
            ecam: Window {
                base: PCI_ECAM_START,
                size: PCI_ECAM_SIZE,
            },
            mmio64: Window {
                base: mmio64_base,
                size: top - mmio64_base,
            },
        })
    }

    /// Total guest RAM in bytes.
    pub fn ram_bytes(&self) -> u64 {
        self.ram_bytes
    }

    /// Guest physical address width the layout was planned for.
    pub fn phys_bits(&self) -> u8 {
        self.phys_bits
    }

    /// RAM regions as `GuestMemoryMmap::from_ranges` wants them (one or two, ascending).
    pub fn ram_regions(&self) -> Vec<(GuestAddress, usize)> {
        std::iter::once(self.low_ram)
            .chain(self.high_ram)
            .map(|w| (GuestAddress(w.base), w.size as usize))
            .collect()
    }

    /// RAM below the 32-bit hole, starting at 0.
    pub fn low_ram(&self) -> Window {
        self.low_ram
    }

    /// RAM from 4 GiB up, if any.
    pub fn high_ram(&self) -> Option<Window> {
        self.high_ram
    }

    /// First address past the end of RAM below the 32-bit hole.
    pub fn low_ram_end(&self) -> GuestAddress {
        GuestAddress(self.low_ram.end())
    }

    /// First address past the highest RAM byte.
    pub fn ram_end(&self) -> GuestAddress {
        GuestAddress(self.high_ram.unwrap_or(self.low_ram).end())
    }

    /// The 32-bit PCI MMIO window (in the hole below 4 GiB).
    pub fn mmio32_window(&self) -> Window {
        self.mmio32
    }

    /// PCI Express ECAM (bus 0..=`ecam_end_bus()`).
    pub fn ecam(&self) -> Window {
        self.ecam
    }

    /// Last PCI bus number ECAM covers (1 MiB per bus).
    pub fn ecam_end_bus(&self) -> u8 {
        ((self.ecam.size >> 20) - 1) as u8
    }

    /// The 64-bit PCI MMIO window above RAM.
    pub fn mmio64_window(&self) -> Window {
        self.mmio64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    /// Lowest naturally aligned slot for a BAR of `size` inside `w`, if any.
    fn bar_slot(w: Window, size: u64) -> Option<u64> {
        let base = align_up(w.base, size)?;
        (base + size <= w.end()).then_some(base)
    }

    #[test]
    fn small_ram_is_one_low_region() {
        let l = MemoryLayout::plan(512 * MIB, 40).unwrap();
        assert_eq!(
            l.ram_regions(),
            vec![(GuestAddress(0), (512 * MIB) as usize)]
        );
        assert_eq!(l.high_ram(), None);
        assert_eq!(l.low_ram_end(), GuestAddress(512 * MIB));
        assert_eq!(l.ram_end(), GuestAddress(512 * MIB));
        assert_eq!(l.mmio64_window().base, 4 * GIB);
    }

    #[test]
    fn ram_crossing_the_hole_is_split() {
        let l = MemoryLayout::plan(4 * GIB, 40).unwrap();
        assert_eq!(
            l.ram_regions(),
            vec![
                (GuestAddress(0), (3 * GIB) as usize),
                (GuestAddress(4 * GIB), GIB as usize)
            ]
        );
        assert_eq!(l.ram_end(), GuestAddress(5 * GIB));
        assert_eq!(l.low_ram_end(), GuestAddress(MEM_32BIT_GAP_START));
        assert_eq!(l.mmio64_window().base, 5 * GIB);
        // Exactly the hole size: all low, nothing high.
        let l = MemoryLayout::plan(3 * GIB, 40).unwrap();
        assert_eq!(l.ram_regions().len(), 1);
    }

    #[test]
    fn odd_ram_end_is_aligned_up_for_the_window() {
        let l = MemoryLayout::plan(3 * GIB + 100 * MIB, 40).unwrap();
        assert_eq!(l.ram_end(), GuestAddress(4 * GIB + 100 * MIB));
        assert_eq!(l.mmio64_window().base, 5 * GIB);
    }

    #[test]
    fn too_small_or_unaligned_ram_is_refused() {
        assert_eq!(
            MemoryLayout::plan(32 * MIB, 40),
            Err(Error::RamTooSmall {
                ram_bytes: 32 * MIB
            })
        );
        assert!(matches!(
            MemoryLayout::plan(64 * MIB + 1, 40),
            Err(Error::RamNotPageAligned { .. })
        ));
        assert!(matches!(
            MemoryLayout::plan(64 * MIB, 30),
            Err(Error::PhysBits { phys_bits: 30 })
        ));
    }

    #[test]
    fn huge_ram_vs_phys_bits() {
        // 40 bits = 1 TiB: 1022 GiB of RAM leaves no room for the window.
        let err = MemoryLayout::plan(1022 * GIB, 40).unwrap_err();
        let Error::RamTooLarge { max_ram_bytes, .. } = err else {
            panic!("unexpected {err:?}");
        };
        assert!(err.to_string().contains("does not fit"), "{err}");
        // The advertised maximum is accepted, one GiB more is not.
        let l = MemoryLayout::plan(max_ram_bytes, 40).unwrap();
        assert_eq!(l.mmio64_window().size, PCI_MMIO64_MIN_SIZE);
        assert!(MemoryLayout::plan(max_ram_bytes + GIB, 40).is_err());
        // The same RAM fits with 46 bits.
        assert!(MemoryLayout::plan(1022 * GIB, 46).is_ok());
    }

    #[test]
    fn mmio64_window_with_40_phys_bits_fits_a_256g_bar() {
        let l = MemoryLayout::plan(512 * MIB, 40).unwrap();
        let w = l.mmio64_window();
        assert_eq!(w.base % PCI_MMIO64_ALIGN, 0);
        assert_eq!(w.end(), (1 << 40) - PCI_MMIO64_TOP_RESERVE);
        assert_eq!(bar_slot(w, 256 * GIB), Some(256 * GIB));
        // Two such BARs fit one after the other.
        let second = Window {
            base: 512 * GIB,
            size: w.end() - 512 * GIB,
        };
        assert_eq!(bar_slot(second, 256 * GIB), Some(512 * GIB));
    }

    #[test]
    fn mmio64_window_with_46_phys_bits() {
        let l = MemoryLayout::plan(64 * GIB, 46).unwrap();
        let w = l.mmio64_window();
        assert_eq!(w.base, 65 * GIB);
        assert_eq!(w.end(), (1 << 46) - PCI_MMIO64_TOP_RESERVE);
        assert!(w.base >= l.ram_end().0);
        assert_eq!(bar_slot(w, 256 * GIB), Some(256 * GIB));
        // Even a 16 TiB BAR fits with natural alignment.
        assert!(bar_slot(w, 16 << 40).is_some());
    }

    #[test]
    fn fixed_windows_stay_in_the_hole() {
        let l = MemoryLayout::plan(8 * GIB, 40).unwrap();
        assert_eq!(l.mmio32_window().base, MEM_32BIT_GAP_START);
        assert!(l.mmio32_window().end() <= l.ecam().base);
        assert!(l.ecam().end() <= RAM_64BIT_START);
        assert_eq!(l.ecam_end_bus(), 0);
    }
}
