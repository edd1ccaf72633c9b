//! Peer-to-peer DMA into a passthrough device's BARs (`p2p=on`): the mmapped areas of each
//! BAR are also mapped in the IOMMU at their guest-physical addresses (IOVA = GPA), so that
//! the other passthrough devices of the VM can DMA into them as on bare metal.
//!
//! When: once, when the device is attached and its BARs get their addresses. Afterwards only
//! a real BAR move (a [`BarMove`] from the config space) unmaps the old IOVA range and maps
//! the new one. The config space reports no move for the guest's sizing writes (all-ones)
//! nor while decode is off, so sizing never remaps; a BAR whose decode the guest turns off
//! stays mapped (the host device then stops decoding it, so a peer's DMA gets no answer, as
//! on bare metal) and is remapped only if it comes back at another address. QEMU instead
//! maps and unmaps with every change of the guest's memory map (decode off and on again
//! included), which for a 64 GiB BAR costs minutes; Cloud Hypervisor maps once and follows
//! moves, as here.
//!
//! A 64-bit BAR the guest rewrites with decode on moves once per half written; each move is
//! followed (Linux turns decode off for that, so in practice it moves once). A failed remap
//! leaves that BAR unmapped, logged, and the next move tries again.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use pci::BarMove;

use crate::vm_hooks::DmaMapper;

/// An mmapped area of a BAR, to be DMA-mapped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaArea {
    /// Offset within the BAR.
    pub offset: u64,
    /// Size in bytes.
    pub size: u64,
    /// Host address of its mmap.
    pub host_addr: u64,
}

/// An IOVA range mapped for a BAR.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DmaRange {
    /// BAR index.
    pub bar: u8,
    /// IOVA (= guest-physical address).
    pub iova: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A BAR area the IOMMU refused.
#[derive(Debug, thiserror::Error)]
#[error("{device}: cannot DMA-map BAR{bar} (area {offset:#x}+{size:#x}) at IOVA {iova:#x} for peer-to-peer DMA (p2p=on): {reason}")]
pub struct P2pError {
    /// Device address.
    pub device: String,
    /// BAR index.
    pub bar: u8,
    /// Offset of the area in the BAR.
    pub offset: u64,
    /// Size of the area.
    pub size: u64,
    /// Where it was to be mapped.
    pub iova: u64,
    /// Why.
    pub reason: String,
}

struct Bar {
    areas: Vec<DmaArea>,
    /// Guest address the areas are mapped at, if they are.
    mapped_at: Option<u64>,
}

/// The IOMMU mappings of one device's BARs. Dropping it unmaps them.
pub struct P2pDma {
    device: String,
    mapper: Arc<dyn DmaMapper>,
    bars: BTreeMap<u8, Bar>,
}

impl P2pDma {
    /// No BAR mapped yet, for device `device`.
    pub fn new(device: &str, mapper: Arc<dyn DmaMapper>) -> Self {
        Self {
            device: device.to_string(),
            mapper,
            bars: BTreeMap::new(),
        }
    }

    /// Maps BAR `bar`'s `areas` with the BAR at guest address `gpa`. On error nothing of
    /// this BAR stays mapped (it is still tracked: a later move tries again).
    pub fn map_bar(&mut self, bar: u8, gpa: u64, areas: Vec<DmaArea>) -> Result<(), P2pError> {
        let result = self.map_areas(bar, gpa, &areas);
        self.bars.insert(
            bar,
            Bar {
                areas,
                mapped_at: result.is_ok().then_some(gpa),
            },
        );
        result
    }

    /// Follows the guest's BAR moves: a tracked BAR is unmapped where it was and mapped where
    /// it went. Returns the remaps that failed (those BARs stay unmapped).
    pub fn follow(&mut self, moves: &[BarMove]) -> Vec<P2pError> {
        let mut errors = Vec::new();
        for mv in moves {
            let Some(b) = self.bars.get(&mv.index) else {
                continue;
            };
            if b.mapped_at == Some(mv.new_addr) {
                continue;
            }
            let (old, areas) = (b.mapped_at, b.areas.clone());
            if let Some(old) = old {
                self.unmap_areas(mv.index, old, &areas);
            }
            let result = self.map_areas(mv.index, mv.new_addr, &areas);
            if let Some(b) = self.bars.get_mut(&mv.index) {
                b.mapped_at = result.is_ok().then_some(mv.new_addr);
            }
            if let Err(e) = result {
                errors.push(e);
            }
        }
        errors
    }

    /// The IOVA ranges mapped now, by BAR and address.
    pub fn ranges(&self) -> Vec<DmaRange> {
        self.bars
            .iter()
            .filter_map(|(bar, b)| Some((*bar, b.mapped_at?, &b.areas)))
            .flat_map(|(bar, at, areas)| {
                areas.iter().map(move |a| DmaRange {
                    bar,
                    iova: at + a.offset,
                    size: a.size,
                })
            })
            .collect()
    }

    /// Unmaps every BAR (teardown); they stay tracked but unmapped.
    pub fn unmap_all(&mut self) {
        let mapped: Vec<(u8, u64, Vec<DmaArea>)> = self
            .bars
            .iter_mut()
            .filter_map(|(bar, b)| Some((*bar, b.mapped_at.take()?, b.areas.clone())))
            .collect();
        if mapped.is_empty() {
            return;
        }
        let started = Instant::now();
        for (bar, at, areas) in &mapped {
            self.unmap_areas(*bar, *at, areas);
        }
        log::info!(
            "{}: {} BAR(s) unmapped from the IOMMU in {:.3} s",
            self.device,
            mapped.len(),
            started.elapsed().as_secs_f64()
        );
    }

    fn map_areas(&self, bar: u8, gpa: u64, areas: &[DmaArea]) -> Result<(), P2pError> {
        let started = Instant::now();
        for (i, a) in areas.iter().enumerate() {
            let iova = gpa + a.offset;
            if let Err(e) = self.mapper.map(iova, a.size, a.host_addr) {
                self.unmap_areas(bar, gpa, &areas[..i]);
                return Err(P2pError {
                    device: self.device.clone(),
                    bar,
                    offset: a.offset,
                    size: a.size,
                    iova,
                    reason: e.0,
                });
            }
        }
        let bytes: u64 = areas.iter().map(|a| a.size).sum();
        log::info!(
            "{}: BAR{bar} DMA-mapped for p2p at IOVA {gpa:#x} ({bytes:#x} bytes in {} areas) in {:.3} s",
            self.device,
            areas.len(),
            started.elapsed().as_secs_f64()
        );
        Ok(())
    }

    fn unmap_areas(&self, bar: u8, gpa: u64, areas: &[DmaArea]) {
        for a in areas {
            if let Err(e) = self.mapper.unmap(gpa + a.offset, a.size) {
                log::warn!(
                    "{}: unmapping BAR{bar} area at IOVA {:#x}+{:#x} from the IOMMU: {e}",
                    self.device,
                    gpa + a.offset,
                    a.size
                );
            }
        }
    }
}

impl Drop for P2pDma {
    fn drop(&mut self) {
        self.unmap_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vm_hooks::HookError;
    use pci::{BarKind, BarSpec, ConfigSpace, PciHeader};
    use std::sync::Mutex;

    /// Records the mapped ranges like an IOMMU: overlapping maps and unknown unmaps fail.
    #[derive(Default)]
    struct FakeIommu {
        mapped: Mutex<BTreeMap<u64, (u64, u64)>>,
        log: Mutex<Vec<String>>,
        refuse_at: Mutex<Option<u64>>,
    }

    impl DmaMapper for FakeIommu {
        fn map(&self, iova: u64, size: u64, host_addr: u64) -> Result<(), HookError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("map {iova:#x}+{size:#x}"));
            if *self.refuse_at.lock().unwrap() == Some(iova) {
                return Err(HookError("EFAULT".into()));
            }
            let mut m = self.mapped.lock().unwrap();
            if m.iter()
                .any(|(start, (len, _))| iova < start + len && *start < iova + size)
            {
                return Err(HookError("EEXIST".into()));
            }
            m.insert(iova, (size, host_addr));
            Ok(())
        }

        fn unmap(&self, iova: u64, size: u64) -> Result<(), HookError> {
            self.log
                .lock()
                .unwrap()
                .push(format!("unmap {iova:#x}+{size:#x}"));
            match self.mapped.lock().unwrap().remove(&iova) {
                Some((s, _)) if s == size => Ok(()),
                _ => Err(HookError("not mapped".into())),
            }
        }
    }

    impl FakeIommu {
        fn take_log(&self) -> Vec<String> {
            std::mem::take(&mut self.log.lock().unwrap())
        }
        fn mapped(&self) -> Vec<(u64, u64, u64)> {
            let m = self.mapped.lock().unwrap();
            m.iter().map(|(i, (s, h))| (*i, *s, *h)).collect()
        }
    }

    const GIB: u64 = 1 << 30;

    fn setup() -> (Arc<FakeIommu>, P2pDma) {
        let iommu = Arc::new(FakeIommu::default());
        let p2p = P2pDma::new("0000:00:07.0", iommu.clone());
        (iommu, p2p)
    }

    fn area(offset: u64, size: u64) -> DmaArea {
        DmaArea {
            offset,
            size,
            host_addr: 0x7f00_0000_0000 + offset,
        }
    }

    fn mv(index: u8, old: u64, new: u64) -> BarMove {
        BarMove {
            index,
            kind: BarKind::Mem64,
            old_addr: old,
            new_addr: new,
            size: 64 * GIB,
        }
    }

    #[test]
    fn areas_are_mapped_at_their_guest_addresses_and_reported() {
        let (iommu, mut p2p) = setup();
        // BAR0 with the MSI-X page (0x3000) left out; BAR2 one big area.
        p2p.map_bar(0, 0xc000_0000, vec![area(0, 0x3000), area(0x4000, 0xc000)])
            .unwrap();
        p2p.map_bar(2, 64 * GIB, vec![area(0, 64 * GIB)]).unwrap();
        assert_eq!(
            iommu.mapped(),
            [
                (0xc000_0000, 0x3000, 0x7f00_0000_0000),
                (0xc000_4000, 0xc000, 0x7f00_0000_4000),
                (64 * GIB, 64 * GIB, 0x7f00_0000_0000),
            ]
        );
        assert_eq!(
            p2p.ranges(),
            [
                DmaRange {
                    bar: 0,
                    iova: 0xc000_0000,
                    size: 0x3000
                },
                DmaRange {
                    bar: 0,
                    iova: 0xc000_4000,
                    size: 0xc000
                },
                DmaRange {
                    bar: 2,
                    iova: 64 * GIB,
                    size: 64 * GIB
                },
            ]
        );
    }

    #[test]
    fn a_move_unmaps_the_old_range_and_maps_the_new_one() {
        let (iommu, mut p2p) = setup();
        p2p.map_bar(2, 64 * GIB, vec![area(0, 64 * GIB)]).unwrap();
        iommu.take_log();
        assert!(p2p.follow(&[mv(2, 64 * GIB, 128 * GIB)]).is_empty());
        assert_eq!(
            iommu.take_log(),
            [
                "unmap 0x1000000000+0x1000000000",
                "map 0x2000000000+0x1000000000"
            ]
        );
        assert_eq!(iommu.mapped(), [(128 * GIB, 64 * GIB, 0x7f00_0000_0000)]);
        // A move to where it is mapped already, and moves of BARs not tracked: nothing.
        assert!(p2p
            .follow(&[mv(2, 64 * GIB, 128 * GIB), mv(4, 0, 0x1000)])
            .is_empty());
        assert!(iommu.take_log().is_empty());
    }

    #[test]
    fn a_failed_remap_leaves_the_bar_unmapped_until_the_next_move() {
        let (iommu, mut p2p) = setup();
        p2p.map_bar(2, 64 * GIB, vec![area(0, 64 * GIB)]).unwrap();
        *iommu.refuse_at.lock().unwrap() = Some(128 * GIB);
        let errs = p2p.follow(&[mv(2, 64 * GIB, 128 * GIB)]);
        assert_eq!(errs.len(), 1);
        let msg = errs[0].to_string();
        assert!(
            msg.starts_with("0000:00:07.0: cannot DMA-map BAR2") && msg.contains("EFAULT"),
            "{msg}"
        );
        assert!(iommu.mapped().is_empty());
        assert!(p2p.ranges().is_empty());
        *iommu.refuse_at.lock().unwrap() = None;
        assert!(p2p.follow(&[mv(2, 128 * GIB, 192 * GIB)]).is_empty());
        assert_eq!(iommu.mapped(), [(192 * GIB, 64 * GIB, 0x7f00_0000_0000)]);
    }

    #[test]
    fn a_failed_first_map_undoes_its_areas_and_names_the_bar() {
        let (iommu, mut p2p) = setup();
        *iommu.refuse_at.lock().unwrap() = Some(0xc000_4000);
        let e = p2p
            .map_bar(0, 0xc000_0000, vec![area(0, 0x3000), area(0x4000, 0xc000)])
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "0000:00:07.0: cannot DMA-map BAR0 (area 0x4000+0xc000) at IOVA 0xc0004000 for peer-to-peer DMA (p2p=on): EFAULT"
        );
        assert!(iommu.mapped().is_empty(), "{:?}", iommu.mapped());
        assert!(p2p.ranges().is_empty());
    }

    #[test]
    fn teardown_unmaps_everything_once() {
        let (iommu, mut p2p) = setup();
        p2p.map_bar(0, 0xc000_0000, vec![area(0, 0x4000)]).unwrap();
        p2p.map_bar(2, 64 * GIB, vec![area(0, 64 * GIB)]).unwrap();
        p2p.unmap_all();
        assert!(iommu.mapped().is_empty());
        iommu.take_log();
        drop(p2p);
        assert!(iommu.take_log().is_empty(), "unmapped twice");
    }

    #[test]
    fn dropping_unmaps() {
        let (iommu, mut p2p) = setup();
        p2p.map_bar(2, 64 * GIB, vec![area(0, 64 * GIB)]).unwrap();
        drop(p2p);
        assert!(iommu.mapped().is_empty());
    }

    /// The guest's config writes, through the config space's move reports, to the IOMMU:
    /// sizing and decode toggles never remap, a real move does, once.
    #[test]
    fn guest_sizing_and_decode_toggles_never_remap() {
        let mut cs = ConfigSpace::new(&PciHeader {
            vendor_id: 0x1af4,
            device_id: 0x1110,
            ..Default::default()
        });
        cs.add_bar(
            2,
            BarSpec {
                kind: BarKind::Mem64,
                prefetchable: true,
                size: 64 * GIB,
                addr: 64 * GIB,
            },
        )
        .unwrap();
        let (iommu, mut p2p) = setup();
        p2p.map_bar(2, 64 * GIB, vec![area(0, 64 * GIB)]).unwrap();
        iommu.take_log();
        let mut write = |off: u16, v: u32| {
            let out = cs.write(off, &v.to_le_bytes());
            assert!(p2p.follow(&out.bar_moves).is_empty());
        };
        // Linux sizing with decode on (mmio_always_on devices) and with decode off.
        write(0x04, 0x0006);
        for _ in 0..2 {
            write(0x18, 0xffff_ffff);
            write(0x1c, 0xffff_ffff);
            write(0x18, 0x0000_000c);
            write(0x1c, 0x0000_0010);
            write(0x04, 0x0004);
            write(0x04, 0x0006);
        }
        assert!(
            iommu.take_log().is_empty(),
            "sizing or decode toggles remapped"
        );
        // A real move, decode off while the halves are written, then on: one remap.
        write(0x04, 0x0004);
        write(0x18, 0x0000_000c);
        write(0x1c, 0x0000_0020);
        assert!(iommu.take_log().is_empty(), "moved while decode was off");
        write(0x04, 0x0006);
        assert_eq!(
            iommu.take_log(),
            [
                "unmap 0x1000000000+0x1000000000",
                "map 0x2000000000+0x1000000000"
            ]
        );
        assert_eq!(p2p.ranges()[0].iova, 128 * GIB);
    }
}
