//! The e820 memory map handed to the guest (in `boot_params` or the PVH memory map).

use crate::layout::{EBDA_START, HIMEM_START};
use crate::memory::MemoryLayout;

/// Kind of an e820 range; the discriminant is the e820 type number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum E820Kind {
    /// Usable RAM.
    Ram = 1,
    /// Reserved: not RAM, not to be used by the OS.
    Reserved = 2,
}

/// One e820 range `[addr, addr + size)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct E820Entry {
    /// First address.
    pub addr: u64,
    /// Length in bytes.
    pub size: u64,
    /// What the range is.
    pub kind: E820Kind,
}

impl E820Entry {
    /// First address past the range.
    pub fn end(&self) -> u64 {
        self.addr + self.size
    }
}

/// Builds the guest's e820 map for `layout`, sorted by address and without overlaps:
/// RAM below the EBDA, the EBDA/BIOS area (which holds the ACPI tables) reserved, RAM from
/// 1 MiB to the 32-bit hole, ECAM reserved (Linux only uses MMCONFIG that e820 or ACPI
/// reserve), and RAM above 4 GiB.
pub fn build(layout: &MemoryLayout) -> Vec<E820Entry> {
    let ecam = layout.ecam();
    let mut map = vec![
        E820Entry {
            addr: 0,
            size: EBDA_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: EBDA_START,
            size: HIMEM_START - EBDA_START,
            kind: E820Kind::Reserved,
        },
        E820Entry {
            addr: HIMEM_START,
            size: layout.low_ram_end().0 - HIMEM_START,
            kind: E820Kind::Ram,
        },
        E820Entry {
            addr: ecam.base,
            size: ecam.size,
            kind: E820Kind::Reserved,
        },
    ];
    if let Some(high) = layout.high_ram() {
        map.push(E820Entry {
            addr: high.base,
            size: high.size,
            kind: E820Kind::Ram,
        });
    }
    map
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::{MEM_32BIT_GAP_START, PCI_ECAM_SIZE, PCI_ECAM_START, RAM_64BIT_START};

    const GIB: u64 = 1 << 30;
    const MIB: u64 = 1 << 20;

    fn check_sorted_disjoint(map: &[E820Entry]) {
        for pair in map.windows(2) {
            assert!(
                pair[0].end() <= pair[1].addr,
                "{pair:?} overlap or unsorted"
            );
        }
        assert!(map.iter().all(|e| e.size > 0));
    }

    fn ram_total(map: &[E820Entry]) -> u64 {
        map.iter()
            .filter(|e| e.kind == E820Kind::Ram)
            .map(|e| e.size)
            .sum()
    }

    #[test]
    fn small_guest() {
        let l = MemoryLayout::plan(512 * MIB, 40).unwrap();
        let map = build(&l);
        check_sorted_disjoint(&map);
        assert_eq!(map.len(), 4);
        assert_eq!((map[0].addr, map[0].end()), (0, EBDA_START));
        assert_eq!((map[2].addr, map[2].end()), (HIMEM_START, 512 * MIB));
        // Everything except the EBDA/BIOS area is RAM.
        assert_eq!(ram_total(&map), 512 * MIB - (HIMEM_START - EBDA_START));
        assert!(map.contains(&E820Entry {
            addr: PCI_ECAM_START,
            size: PCI_ECAM_SIZE,
            kind: E820Kind::Reserved
        }));
    }

    #[test]
    fn guest_crossing_the_hole() {
        let l = MemoryLayout::plan(4 * GIB, 46).unwrap();
        let map = build(&l);
        check_sorted_disjoint(&map);
        assert_eq!(map.len(), 5);
        assert_eq!(map[2].end(), MEM_32BIT_GAP_START);
        assert_eq!(map[3].kind, E820Kind::Reserved);
        assert_eq!(map[3].addr, PCI_ECAM_START);
        assert_eq!(
            map[4],
            E820Entry {
                addr: RAM_64BIT_START,
                size: GIB,
                kind: E820Kind::Ram
            }
        );
        assert_eq!(ram_total(&map), 4 * GIB - (HIMEM_START - EBDA_START));
        // No RAM range touches the PCI windows.
        for e in map.iter().filter(|e| e.kind == E820Kind::Ram) {
            for w in [l.mmio32_window(), l.mmio64_window(), l.ecam()] {
                assert!(
                    e.end() <= w.base || e.addr >= w.end(),
                    "{e:?} overlaps {w:?}"
                );
            }
        }
    }
}
