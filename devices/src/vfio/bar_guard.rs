//! Guest BAR moves, checked before they take effect. A guest may write any address into a
//! BAR; the vmm's [`BarPlacement`] refuses ranges over RAM, reserved ranges, other BARs or
//! outside the PCI windows. A refused BAR is *parked*: its memslots go, its trapped
//! accesses are dropped (reads all-ones), and the vmm's buses keep its range at the last
//! accepted address (which stays claimed, so no other BAR can take it meanwhile). When the
//! guest writes an acceptable address again, the BAR moves there from that last accepted
//! address and is mapped again.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use pci::{BarMove, BarRegion, ConfigWriteOutcome, ROM_BAR_INDEX};

use crate::vm_hooks::BarPlacement;

/// The checked result of a config write's BAR moves.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Vetted {
    /// The accepted moves, each from where the vmm's buses have the BAR.
    pub accepted: ConfigWriteOutcome,
    /// BARs parked by this write (they were mapped until now).
    pub parked: Vec<u8>,
}

/// Tracks, per BAR, the last accepted address and whether the BAR is parked.
#[derive(Default)]
pub struct BarGuard {
    placement: Option<Arc<dyn BarPlacement>>,
    /// Where the vmm's buses have each BAR: its last accepted address.
    registered: BTreeMap<u8, u64>,
    parked: BTreeSet<u8>,
}

fn bar_name(index: u8) -> String {
    if index == ROM_BAR_INDEX {
        "ROM BAR".into()
    } else {
        format!("BAR{index}")
    }
}

impl BarGuard {
    /// From now on moves are checked with `placement`; `bars` are where the BARs are
    /// registered now (and already claimed).
    pub fn set_placement(&mut self, placement: Arc<dyn BarPlacement>, bars: &[BarRegion]) {
        self.placement = Some(placement);
        self.registered = bars.iter().map(|b| (b.index, b.addr)).collect();
        self.parked.clear();
    }

    /// Whether accesses to `bar` are to be dropped.
    pub fn is_parked(&self, bar: u8) -> bool {
        self.parked.contains(&bar)
    }

    /// Checks the moves of one config write of `device`. Without a placement every move is
    /// accepted as it is.
    pub fn vet(&mut self, device: &str, outcome: ConfigWriteOutcome) -> Vetted {
        let Some(placement) = &self.placement else {
            return Vetted {
                accepted: outcome,
                parked: Vec::new(),
            };
        };
        let mut vetted = Vetted::default();
        for mv in outcome.bar_moves {
            match placement.claim(device, mv.index, mv.kind, mv.new_addr, mv.size) {
                Ok(()) => {
                    let old_addr = self
                        .registered
                        .insert(mv.index, mv.new_addr)
                        .unwrap_or(mv.old_addr);
                    self.parked.remove(&mv.index);
                    vetted.accepted.bar_moves.push(BarMove { old_addr, ..mv });
                }
                Err(refusal) => {
                    log::warn!(
                        "{device}: {} moved by the guest to {:#x} (size {:#x}) is not mapped: \
                         {refusal}; its accesses are dropped until the guest moves it to a \
                         free place in a PCI window",
                        bar_name(mv.index),
                        mv.new_addr,
                        mv.size
                    );
                    if self.parked.insert(mv.index) {
                        vetted.parked.push(mv.index);
                    }
                }
            }
        }
        vetted
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use pci::BarKind;

    use super::*;
    use crate::vm_hooks::BarRefusal;

    /// Refuses addresses below 0x1000; records the claims it accepted.
    #[derive(Default)]
    struct Fake {
        claims: Mutex<Vec<(u8, u64)>>,
    }

    impl BarPlacement for Fake {
        fn claim(
            &self,
            _device: &str,
            bar: u8,
            _kind: BarKind,
            addr: u64,
            _size: u64,
        ) -> Result<(), BarRefusal> {
            if addr < 0x1000 {
                return Err(BarRefusal::Ram {
                    start: 0,
                    end: 0x1000,
                });
            }
            self.claims.lock().unwrap().push((bar, addr));
            Ok(())
        }
    }

    fn mv(index: u8, old_addr: u64, new_addr: u64) -> BarMove {
        BarMove {
            index,
            kind: BarKind::Mem64,
            old_addr,
            new_addr,
            size: 0x100,
        }
    }

    fn moves(list: Vec<BarMove>) -> ConfigWriteOutcome {
        ConfigWriteOutcome { bar_moves: list }
    }

    fn region(index: u8, addr: u64) -> BarRegion {
        BarRegion {
            index,
            kind: BarKind::Mem64,
            prefetchable: false,
            addr,
            size: 0x100,
        }
    }

    #[test]
    fn without_a_placement_everything_passes() {
        let mut g = BarGuard::default();
        let out = moves(vec![mv(0, 0x8000, 0x0)]);
        assert_eq!(
            g.vet("d", out.clone()),
            Vetted {
                accepted: out,
                parked: vec![]
            }
        );
        assert!(!g.is_parked(0));
    }

    #[test]
    fn refused_move_parks_and_the_next_good_one_starts_from_the_last_accepted_address() {
        let fake = Arc::new(Fake::default());
        let mut g = BarGuard::default();
        g.set_placement(fake.clone(), &[region(0, 0x8000), region(2, 0x9000)]);

        // Over "RAM": parked, nothing for the buses.
        let v = g.vet("d", moves(vec![mv(0, 0x8000, 0x200)]));
        assert_eq!(v.accepted, ConfigWriteOutcome::none());
        assert_eq!(v.parked, vec![0]);
        assert!(g.is_parked(0) && !g.is_parked(2));

        // Still bad: stays parked, not reported twice.
        let v = g.vet("d", moves(vec![mv(0, 0x200, 0x400)]));
        assert!(v.accepted.is_empty() && v.parked.is_empty());

        // A good address: the buses move the BAR from 0x8000, where they still have it.
        let v = g.vet("d", moves(vec![mv(0, 0x400, 0xa000)]));
        assert_eq!(v.accepted, moves(vec![mv(0, 0x8000, 0xa000)]));
        assert!(v.parked.is_empty() && !g.is_parked(0));

        // Back to its old address after a refusal: a move from 0xa000.
        g.vet("d", moves(vec![mv(0, 0xa000, 0x0)]));
        let v = g.vet("d", moves(vec![mv(0, 0x0, 0x8000), mv(2, 0x9000, 0xb000)]));
        assert_eq!(
            v.accepted,
            moves(vec![mv(0, 0xa000, 0x8000), mv(2, 0x9000, 0xb000)])
        );
        assert_eq!(
            *fake.claims.lock().unwrap(),
            vec![(0, 0xa000), (0, 0x8000), (2, 0xb000)]
        );
    }
}
