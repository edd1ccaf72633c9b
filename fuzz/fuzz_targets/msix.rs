//! MSI-X from the guest's side, twice:
//! - on the H200 passed through: reads and writes of any size anywhere around the trapped
//!   table and PBA in BAR0, the control word (enable, function mask) in config space; KVM
//!   and VFIO used correctly, teardown leaves nothing;
//! - on `pci::MsixConfig` of any layout with a checking `MsiRoutes` that may fail any step:
//!   the calls come in the documented order (disable, set_routes, enable, trigger), only
//!   vectors that may fire are routed and enabled, and after every step that succeeded the
//!   armed vectors are exactly those that may fire.
#![no_main]

use std::collections::BTreeSet;

use conduit_fuzz::{Rig, Size};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pci::msix::{MsixLayout, MSIX_ENTRY_SIZE};
use pci::{MsiRoutes, MsixConfig, PciDevice, RouteError, VectorRoute};

#[derive(Arbitrary, Debug)]
struct Input {
    device_ops: Vec<DeviceOp>,
    table_size: u16,
    emulated_ops: Vec<EmulatedOp>,
}

/// Accesses to the passthrough device.
#[derive(Arbitrary, Debug)]
enum DeviceOp {
    /// `offset` from the table start (may be before or past it).
    Table {
        offset: i16,
        size: Size,
        write: Option<u64>,
    },
    Pba {
        offset: i16,
        size: Size,
        write: Option<u64>,
    },
    /// Anywhere in BAR0.
    Bar {
        offset: u32,
        size: Size,
        write: Option<u64>,
    },
    Control {
        value: u16,
    },
    /// Program vector `v`: address, data, mask bit.
    Vector {
        v: u8,
        address: u32,
        data: u32,
        masked: bool,
    },
}

/// Accesses to an emulated MSI-X.
#[derive(Arbitrary, Debug)]
enum EmulatedOp {
    Read {
        offset: u16,
        size: Size,
        pba: bool,
    },
    Write {
        offset: u16,
        size: Size,
        value: u64,
    },
    Control {
        value: u16,
    },
    Vector {
        v: u16,
        address: u32,
        data: u32,
        masked: bool,
    },
    Interrupt {
        v: u16,
    },
    /// The next route call of this kind fails (0 disable, 1 set_routes, 2 enable, 3 trigger).
    Fail {
        step: u8,
    },
}

const TABLE: u64 = 0xb9_0000;
const PBA: u64 = 0xba_0000;

fn bar_access(rig: &mut Rig, offset: u64, size: Size, write: Option<u64>) {
    let n = size.bytes(8);
    match write {
        Some(v) => rig.dev.bar_write(0, offset, &v.to_le_bytes()[..n]),
        None => {
            let mut b = [0u8; 8];
            rig.dev.bar_read(0, offset, &mut b[..n]);
        }
    }
}

fn device(ops: Vec<DeviceOp>) {
    let Some(mut rig) = Rig::new(conduit_fuzz::h200().0.clone()) else {
        panic!("the H200 fixture must attach");
    };
    let mut both_seen = false;
    for op in ops {
        match op {
            DeviceOp::Table {
                offset,
                size,
                write,
            } => bar_access(
                &mut rig,
                TABLE.wrapping_add_signed(offset.into()),
                size,
                write,
            ),
            DeviceOp::Pba {
                offset,
                size,
                write,
            } => bar_access(
                &mut rig,
                PBA.wrapping_add_signed(offset.into()),
                size,
                write,
            ),
            DeviceOp::Bar {
                offset,
                size,
                write,
            } => bar_access(&mut rig, u64::from(offset % (16 << 20)), size, write),
            DeviceOp::Control { value } => {
                rig.dev.write_config(0xb2, &value.to_le_bytes());
            }
            DeviceOp::Vector {
                v,
                address,
                data,
                masked,
            } => {
                let e = TABLE + u64::from(v % 10) * MSIX_ENTRY_SIZE;
                rig.dev.bar_write(0, e, &address.to_le_bytes());
                rig.dev.bar_write(0, e + 4, &0u32.to_le_bytes());
                rig.dev.bar_write(0, e + 8, &data.to_le_bytes());
                rig.dev
                    .bar_write(0, e + 12, &u32::from(masked).to_le_bytes());
            }
        }
        both_seen |= rig.both_msi_kinds_enabled();
        rig.check(both_seen);
        // Table size: 9 vectors, read-only.
        assert_eq!(rig.read(0xb2, 2) & 0x7ff, 8);
    }
    rig.teardown();
}

/// An `MsiRoutes` that checks the call order and what is routed, and fails on request.
#[derive(Default)]
struct Checker {
    /// Vectors with an irqfd (enabled and not disabled since).
    enabled: BTreeSet<u16>,
    /// Which may fire once the current change is applied.
    may_fire: BTreeSet<u16>,
    /// Last step of the current change (0 disable .. 3 trigger).
    last_step: u8,
    /// Make this step fail next.
    fail: Option<u8>,
    /// A step has failed: the tracker retries it at the vector's next change, so until
    /// then armed and may-fire can differ.
    failed: bool,
}

impl Checker {
    fn step(&mut self, step: u8) -> Result<(), RouteError> {
        assert!(
            step >= self.last_step,
            "route call {step} after {}",
            self.last_step
        );
        self.last_step = step;
        if self.fail == Some(step) {
            self.fail = None;
            self.failed = true;
            return Err(RouteError::new("fuzz", "injected failure"));
        }
        Ok(())
    }
}

impl MsiRoutes for Checker {
    fn disable(&mut self, vectors: &[u16]) -> Result<(), RouteError> {
        assert!(!vectors.is_empty());
        self.step(0)?;
        for v in vectors {
            assert!(
                self.enabled.remove(v),
                "vector {v} disabled but not enabled"
            );
        }
        Ok(())
    }

    fn set_routes(&mut self, routes: &[VectorRoute]) -> Result<(), RouteError> {
        self.step(1)?;
        let set: BTreeSet<u16> = routes.iter().map(|r| r.vector).collect();
        assert_eq!(set.len(), routes.len(), "a vector routed twice");
        for r in routes {
            assert!(r.message.is_valid(), "invalid message routed: {r:?}");
        }
        if !self.failed {
            assert_eq!(
                set, self.may_fire,
                "routes differ from the vectors that may fire"
            );
        }
        Ok(())
    }

    fn enable(&mut self, vectors: &[u16]) -> Result<(), RouteError> {
        assert!(!vectors.is_empty());
        self.step(2)?;
        for v in vectors {
            assert!(
                self.may_fire.contains(v),
                "vector {v} enabled while it may not fire"
            );
            assert!(self.enabled.insert(*v), "vector {v} enabled twice");
        }
        Ok(())
    }

    fn trigger(&mut self, vector: u16) -> Result<(), RouteError> {
        self.step(3)?;
        assert!(
            self.enabled.contains(&vector),
            "trigger of unarmed {vector}"
        );
        Ok(())
    }
}

/// Accepts everything (to see a change's outcome on a copy).
struct AcceptAll;

impl MsiRoutes for AcceptAll {
    fn disable(&mut self, _: &[u16]) -> Result<(), RouteError> {
        Ok(())
    }
    fn set_routes(&mut self, _: &[VectorRoute]) -> Result<(), RouteError> {
        Ok(())
    }
    fn enable(&mut self, _: &[u16]) -> Result<(), RouteError> {
        Ok(())
    }
    fn trigger(&mut self, _: u16) -> Result<(), RouteError> {
        Ok(())
    }
}

fn may_fire(m: &MsixConfig) -> BTreeSet<u16> {
    (0..m.layout().table_size)
        .filter(|&v| !m.is_masked(v) && m.entry(v).is_some_and(|e| e.message().is_valid()))
        .collect()
}

fn armed(m: &MsixConfig) -> BTreeSet<u16> {
    (0..m.layout().table_size)
        .filter(|&v| m.is_armed(v))
        .collect()
}

/// Applies one guest change `f` and checks the outcome.
fn apply(
    m: &mut MsixConfig,
    c: &mut Checker,
    f: impl Fn(&mut MsixConfig, &mut dyn MsiRoutes) -> Result<(), RouteError>,
) {
    // Which vectors may fire after the change: seen on a copy first.
    let mut probe = m.clone();
    if let Err(e) = f(&mut probe, &mut AcceptAll) {
        panic!("a change failed with routes that accept everything: {e}");
    }
    c.may_fire = may_fire(&probe);
    c.last_step = 0;
    let result = f(m, c);
    assert_eq!(
        armed(m),
        c.enabled,
        "armed vectors differ from the vmm's irqfds"
    );
    if result.is_ok() && !c.failed {
        assert_eq!(
            armed(m),
            c.may_fire,
            "armed vectors differ from those that may fire"
        );
        for v in &c.enabled {
            assert!(!m.pending(*v), "armed vector {v} still pending");
        }
    }
}

fn emulated(table_size: u16, ops: Vec<EmulatedOp>) {
    let layout = MsixLayout {
        table_size: table_size % 2048 + 1,
        table_bir: 0,
        table_offset: 0x2000,
        pba_bir: 0,
        pba_offset: 0x8000,
    };
    let Ok(mut m) = MsixConfig::new(0xb0, layout) else {
        panic!("valid layout refused: {layout:?}");
    };
    let n = layout.table_size;
    let mut c = Checker::default();
    for op in ops {
        match op {
            EmulatedOp::Read { offset, size, pba } => {
                let mut b = [0u8; 8];
                let len = size.bytes(8);
                if pba {
                    m.read_pba(offset.into(), &mut b[..len]);
                } else {
                    m.read_table(offset.into(), &mut b[..len]);
                }
            }
            EmulatedOp::Write {
                offset,
                size,
                value,
            } => {
                let len = size.bytes(8);
                apply(&mut m, &mut c, |m, r| {
                    m.write_table(offset.into(), &value.to_le_bytes()[..len], r)
                });
            }
            EmulatedOp::Control { value } => {
                apply(&mut m, &mut c, |m, r| {
                    m.write_config(0xb2, &value.to_le_bytes(), r)
                });
                let mut ctl = [0u8; 2];
                m.read_config(0xb2, &mut ctl);
                assert_eq!(u16::from_le_bytes(ctl) & 0x7ff, n - 1, "table size changed");
            }
            EmulatedOp::Vector {
                v,
                address,
                data,
                masked,
            } => {
                let e = u64::from(v % n) * MSIX_ENTRY_SIZE;
                let writes = [(0, address), (8, data), (12, u32::from(masked))];
                for (at, value) in writes {
                    apply(&mut m, &mut c, |m, r| {
                        m.write_table(e + at, &value.to_le_bytes(), r)
                    });
                }
            }
            EmulatedOp::Interrupt { v } => {
                let deliver = m.request_interrupt(v);
                assert_eq!(deliver, m.is_armed(v), "vector {v}");
                if !deliver && v < n {
                    assert!(m.pending(v), "masked vector {v} not pending");
                }
            }
            EmulatedOp::Fail { step } => c.fail = Some(step % 4),
        }
    }
}

fuzz_target!(|input: Input| {
    device(input.device_ops);
    emulated(input.table_size, input.emulated_ops);
});
