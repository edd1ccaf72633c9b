//! Where the guest may put a BAR. A guest can program any address into a BAR; before a
//! passthrough device maps a moved BAR (memslots, bus range), the address is checked here:
//! a memory BAR must lie inside a PCI MMIO window (so never over RAM, the legacy area below
//! 1 MiB, ECAM, the IOAPIC, the local APIC/MSI range or anything else in the hole below
//! 4 GiB), an I/O BAR inside the PCI I/O window, and no BAR may overlap another BAR's
//! claim, of any device. One claim per BAR, kept from attach to teardown.

use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::Mutex;

use boot::layout;
use devices::vm_hooks::{BarPlacement, BarRefusal};
use pci::BarKind;

/// Size of the IOAPIC's register window.
const IOAPIC_SIZE: u64 = 0x1000;
/// The local APIC page and the rest of the 1 MiB MSI address range it sits in.
const APIC_RANGE_SIZE: u64 = 0x10_0000;

#[derive(Clone, Debug)]
struct Claim {
    io: bool,
    range: Range<u64>,
}

/// The guest's address map as BARs see it, and the claims of every attached BAR.
#[derive(Debug)]
pub struct BarPlacements {
    ram: Vec<Range<u64>>,
    reserved: Vec<(&'static str, Range<u64>)>,
    mem_windows: Vec<Range<u64>>,
    io_window: Range<u64>,
    claims: Mutex<BTreeMap<(String, u8), Claim>>,
}

fn overlap(a: &Range<u64>, b: &Range<u64>) -> bool {
    a.start < b.end && b.start < a.end
}

fn inside(r: &Range<u64>, w: &Range<u64>) -> bool {
    w.start <= r.start && r.end <= w.end
}

fn describe(windows: &[Range<u64>], what: &str) -> String {
    let list: Vec<String> = windows
        .iter()
        .map(|w| format!("{:#x}..{:#x}", w.start, w.end))
        .collect();
    format!("{what} {}", list.join(" and "))
}

impl BarPlacements {
    /// The rules for a VM with `layout`; no claims yet.
    pub fn new(layout: &boot::MemoryLayout) -> Self {
        let ram = layout
            .ram_regions()
            .iter()
            .map(|(a, s)| a.0..a.0 + *s as u64)
            .collect();
        let ecam = layout.ecam();
        let reserved = vec![
            ("PCI ECAM window", ecam.base..ecam.end()),
            (
                "IOAPIC",
                layout::IOAPIC_START..layout::IOAPIC_START + IOAPIC_SIZE,
            ),
            (
                "local APIC and MSI range",
                layout::APIC_START..layout::APIC_START + APIC_RANGE_SIZE,
            ),
        ];
        let (w32, w64) = (layout.mmio32_window(), layout.mmio64_window());
        let io_start = u64::from(layout::PCI_IO_START);
        Self {
            ram,
            reserved,
            mem_windows: vec![w32.base..w32.end(), w64.base..w64.end()],
            io_window: io_start..io_start + u64::from(layout::PCI_IO_SIZE),
            claims: Mutex::new(BTreeMap::new()),
        }
    }

    /// Whether BAR `bar` of `device` may take `range` given the other `claims`.
    fn check(
        &self,
        claims: &BTreeMap<(String, u8), Claim>,
        owner: &(String, u8),
        io: bool,
        range: &Range<u64>,
    ) -> Result<(), BarRefusal> {
        if io {
            if !inside(range, &self.io_window) {
                return Err(BarRefusal::OutsideWindows {
                    windows: describe(std::slice::from_ref(&self.io_window), "I/O window"),
                });
            }
        } else {
            if let Some(r) = self.ram.iter().find(|r| overlap(range, r)) {
                return Err(BarRefusal::Ram {
                    start: r.start,
                    end: r.end,
                });
            }
            if let Some((what, r)) = self.reserved.iter().find(|(_, r)| overlap(range, r)) {
                return Err(BarRefusal::Reserved {
                    what,
                    start: r.start,
                    end: r.end,
                });
            }
            if !self.mem_windows.iter().any(|w| inside(range, w)) {
                return Err(BarRefusal::OutsideWindows {
                    windows: describe(&self.mem_windows, "MMIO windows"),
                });
            }
        }
        let clash = claims
            .iter()
            .find(|(k, c)| *k != owner && c.io == io && overlap(range, &c.range));
        if let Some(((device, bar), c)) = clash {
            return Err(BarRefusal::Bar {
                device: device.clone(),
                bar: *bar,
                addr: c.range.start,
                size: c.range.end - c.range.start,
            });
        }
        Ok(())
    }
}

impl BarPlacement for BarPlacements {
    fn claim(
        &self,
        device: &str,
        bar: u8,
        kind: BarKind,
        addr: u64,
        size: u64,
    ) -> Result<(), BarRefusal> {
        let io = kind == BarKind::Io;
        let Some(end) = addr.checked_add(size).filter(|_| size > 0) else {
            return Err(BarRefusal::OutsideWindows {
                windows: if io {
                    describe(std::slice::from_ref(&self.io_window), "I/O window")
                } else {
                    describe(&self.mem_windows, "MMIO windows")
                },
            });
        };
        let range = addr..end;
        let owner = (device.to_string(), bar);
        let mut claims = self.claims.lock().unwrap_or_else(|p| p.into_inner());
        self.check(&claims, &owner, io, &range)?;
        claims.insert(owner, Claim { io, range });
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;
    const GIB: u64 = 1 << 30;

    fn placements() -> BarPlacements {
        BarPlacements::new(&boot::MemoryLayout::plan(512 * MIB, 40).unwrap())
    }

    #[test]
    fn bars_inside_the_windows_are_claimed_and_may_move_within_their_own_range() {
        let p = placements();
        let w32 = p.mem_windows[0].start;
        let w64 = p.mem_windows[1].start;
        p.claim("a", 0, BarKind::Mem32, w32, 0x4000).unwrap();
        p.claim(
            "a",
            2,
            BarKind::Mem64,
            w64,
            (64 * GIB).min(p.mem_windows[1].end - w64),
        )
        .unwrap();
        // A 64-bit BAR may also sit in the 32-bit window.
        p.claim("b", 0, BarKind::Mem64, w32 + 0x10_0000, 0x4000)
            .unwrap();
        // Moving onto a range overlapping its own old claim is fine.
        p.claim("a", 0, BarKind::Mem32, w32 + 0x2000, 0x4000)
            .unwrap();
        p.claim("a", 0, BarKind::Mem32, w32, 0x4000).unwrap();
        p.claim("c", 1, BarKind::Io, 0x1000, 0x20).unwrap();
    }

    #[test]
    fn ram_reserved_ranges_and_the_hole_are_refused() {
        let p = placements();
        assert_eq!(
            p.claim("a", 0, BarKind::Mem64, 0x80000, 0x4000),
            Err(BarRefusal::Ram {
                start: 0,
                end: 512 * MIB
            })
        );
        // Straddling the end of RAM is still over RAM.
        assert!(matches!(
            p.claim("a", 0, BarKind::Mem32, 512 * MIB - 0x1000, 0x4000),
            Err(BarRefusal::Ram { .. })
        ));
        for (addr, what) in [
            (layout::PCI_ECAM_START, "PCI ECAM window"),
            (layout::IOAPIC_START, "IOAPIC"),
            (layout::APIC_START, "local APIC and MSI range"),
            (layout::APIC_START + 0x8_0000, "local APIC and MSI range"),
        ] {
            match p.claim("a", 0, BarKind::Mem32, addr, 0x1000) {
                Err(BarRefusal::Reserved { what: w, .. }) => assert_eq!(w, what),
                other => panic!("{addr:#x}: {other:?}"),
            }
        }
        // The rest of the hole, past the top of the 64-bit window, or wrapping around.
        let end64 = p.mem_windows[1].end;
        for (addr, size) in [
            (0xf000_0000, 0x4000),
            (0xfeff_c000, 0x1000),
            (512 * MIB + 0x10_0000, 0x4000),
            (end64, 0x1000),
            (end64 - 0x1000, 0x2000),
            (u64::MAX - 0xfff, 0x1000),
        ] {
            let got = p.claim("a", 0, BarKind::Mem64, addr, size);
            assert!(
                matches!(got, Err(BarRefusal::OutsideWindows { .. })),
                "{addr:#x}+{size:#x}: {got:?}"
            );
        }
        // I/O BARs stay in the I/O window: not over COM1, the PCI config ports or ACPI PM.
        for port in [0x3f8, 0xcf8, 0x600, 0xfff0] {
            assert!(
                matches!(
                    p.claim("a", 1, BarKind::Io, port, 0x20),
                    Err(BarRefusal::OutsideWindows { .. })
                ),
                "port {port:#x}"
            );
        }
        assert!(p.claims.lock().unwrap().is_empty());
    }

    #[test]
    fn another_bar_is_refused_and_the_old_claim_stays() {
        let p = placements();
        let w32 = p.mem_windows[0].start;
        p.claim("0000:00:04.0", 3, BarKind::Mem32, w32 + 0x4_0000, 0x4000)
            .unwrap();
        p.claim("0000:00:02.0", 0, BarKind::Mem64, w32, 0x4000)
            .unwrap();
        let refused = p.claim("0000:00:02.0", 0, BarKind::Mem64, w32 + 0x4_2000, 0x4000);
        assert_eq!(
            refused,
            Err(BarRefusal::Bar {
                device: "0000:00:04.0".into(),
                bar: 3,
                addr: w32 + 0x4_0000,
                size: 0x4000
            })
        );
        let msg = refused.unwrap_err().to_string();
        assert!(msg.contains("BAR3 of 0000:00:04.0"), "{msg}");
        // The refused BAR keeps its old range: nobody else may take it meanwhile.
        assert!(matches!(
            p.claim("0000:00:04.0", 0, BarKind::Mem32, w32, 0x1000),
            Err(BarRefusal::Bar { bar: 0, .. })
        ));
        // I/O and memory claims do not clash with each other.
        p.claim("0000:00:04.0", 2, BarKind::Io, 0x1000, 0x20)
            .unwrap();
        assert!(matches!(
            p.claim("0000:00:02.0", 1, BarKind::Io, 0x1010, 0x10),
            Err(BarRefusal::Bar { bar: 2, .. })
        ));
        // Once the other BAR has gone elsewhere, its old range is free.
        p.claim("0000:00:04.0", 3, BarKind::Mem32, w32 + 0x8_0000, 0x4000)
            .unwrap();
        p.claim("0000:00:02.0", 0, BarKind::Mem64, w32 + 0x4_0000, 0x4000)
            .unwrap();
    }
}
