//! Guest config-space reads and writes on an H200 passed through (VfioPciDevice over the
//! in-memory VFIO device seeded with the fixture, optionally patched like odd firmware):
//! BAR sizing and moves, the command register, MSI and MSI-X control, anything anywhere.
//! After every access: identity, header and capability-list registers unchanged, the
//! interrupt pin hidden, BAR registers aligned to their size with fixed type bits, reported
//! BAR moves aligned and applied, KVM and VFIO used correctly; teardown leaves nothing.
#![no_main]

use conduit_fuzz::{Rig, Size};
use libfuzzer_sys::arbitrary::{self, Arbitrary};
use libfuzzer_sys::fuzz_target;
use pci::{BarKind, PciDevice};

#[derive(Arbitrary, Debug)]
struct Input {
    /// Byte patches to the H200's config space before the device is built (the first few).
    patches: Vec<(u16, u8)>,
    /// Wire INTx (the guest then sees the interrupt pin).
    attach_intx: bool,
    ops: Vec<Op>,
}

#[derive(Arbitrary, Debug)]
enum Op {
    Read {
        offset: u16,
        size: Size,
    },
    Write {
        offset: u16,
        size: Size,
        value: u32,
    },
    /// All-ones to BAR register `reg % 6` or the ROM (6), then read it back.
    SizeBar {
        reg: u8,
    },
    ProgramBar {
        reg: u8,
        value: u32,
    },
    Command {
        value: u16,
    },
    MsixControl {
        value: u16,
    },
    Msi {
        at: u8,
        size: Size,
        value: u32,
    },
}

const MAX_PATCHES: usize = 4;
const CAP_ID_MSI: u8 = 0x05;
const CAP_ID_MSIX: u8 = 0x11;

/// Mostly inside config space, sometimes anywhere in the 16-bit offset range.
fn offset(raw: u16) -> u16 {
    if raw >> 13 == 7 {
        raw
    } else {
        raw & 0xfff
    }
}

/// A register (or some of its bits) the guest cannot change.
struct Fixed {
    offset: u16,
    len: usize,
    mask: u32,
    value: u32,
}

/// The identity, header type, subsystem, capability pointer and list links, and the MSI-X
/// table size and table/PBA locations, as the guest first sees them.
fn read_only(rig: &mut Rig) -> Vec<Fixed> {
    let mut regs = vec![
        (0x00, 4, !0),
        (0x08, 4, !0),
        (0x0e, 1, !0),
        (0x2c, 4, !0),
        (0x34, 1, !0),
    ];
    for cap in pci::capabilities(&rig.vfio.config()) {
        let o = u16::from(cap.offset);
        regs.push((o, 2, !0));
        if cap.id == CAP_ID_MSIX {
            regs.extend([(o + 2, 2, 0x7ff), (o + 4, 4, !0), (o + 8, 4, !0)]);
        }
    }
    regs.into_iter()
        .map(|(offset, len, mask)| Fixed {
            offset,
            len,
            mask,
            value: rig.read(offset, len) & mask,
        })
        .collect()
}

fn check_registers(rig: &mut Rig, fixed: &[Fixed], pin: u8) {
    for f in fixed {
        let now = rig.read(f.offset, f.len) & f.mask;
        assert_eq!(now, f.value, "read-only register {:#x} changed", f.offset);
    }
    assert_eq!(rig.read(0x3d, 1), u32::from(pin), "interrupt pin");
    for b in rig.dev.bars() {
        let reg = if b.index == pci::ROM_BAR_INDEX {
            0x30
        } else {
            0x10 + 4 * u16::from(b.index)
        };
        let low = u64::from(rig.read(reg, 4));
        let value = match b.kind {
            BarKind::Mem64 => u64::from(rig.read(reg + 4, 4)) << 32 | low,
            _ => low,
        };
        let (type_bits, low_mask) = match (b.index == pci::ROM_BAR_INDEX, b.kind) {
            (true, _) => (None, 0x7ff),
            (false, BarKind::Io) => (Some(1), 0x3),
            (false, BarKind::Mem32) => (Some(u64::from(b.prefetchable) << 3), 0xf),
            (false, BarKind::Mem64) => (Some(0x4 | u64::from(b.prefetchable) << 3), 0xf),
        };
        if let Some(t) = type_bits {
            assert_eq!(value & low_mask, t, "BAR{} type bits: {value:#x}", b.index);
        }
        assert_eq!(
            value & (b.size - 1) & !low_mask,
            0,
            "BAR{} register {value:#x} not aligned to its size {:#x}",
            b.index,
            b.size
        );
    }
}

fn write(rig: &mut Rig, offset: u16, data: &[u8]) {
    let outcome = rig.dev.write_config(offset, data);
    let bars = rig.dev.bars();
    for mv in &outcome.bar_moves {
        assert_eq!(mv.new_addr % mv.size, 0, "move not aligned: {mv:?}");
        let now = bars.iter().find(|b| b.index == mv.index);
        assert_eq!(
            now.map(|b| b.addr),
            Some(mv.new_addr),
            "move not applied: {mv:?}"
        );
    }
}

fuzz_target!(|input: Input| {
    let mut config = conduit_fuzz::h200().0.clone();
    for &(at, v) in input.patches.iter().take(MAX_PATCHES) {
        config[usize::from(at & 0xfff)] = v;
    }
    let Some(mut rig) = Rig::new(config) else {
        return;
    };
    let mut pin = 0;
    if input.attach_intx {
        if let Err(e) = rig.dev.attach_intx(18) {
            panic!("attach_intx: {e}");
        }
        pin = rig.dev.intx_pin();
    }
    let fixed = read_only(&mut rig);
    let msi = pci::find_capability(&rig.vfio.config(), CAP_ID_MSI).map(u16::from);
    let msix = pci::find_capability(&rig.vfio.config(), CAP_ID_MSIX).map(u16::from);
    let mut both_seen = false;
    for op in input.ops {
        match op {
            Op::Read { offset: o, size } => {
                let mut b = [0u8; 8];
                rig.dev.read_config(offset(o), &mut b[..size.bytes(8)]);
            }
            Op::Write {
                offset: o,
                size,
                value,
            } => {
                let n = size.bytes(4);
                write(&mut rig, offset(o), &value.to_le_bytes()[..n]);
            }
            Op::SizeBar { reg } => {
                let reg = match reg % 7 {
                    6 => 0x30,
                    r => 0x10 + 4 * u16::from(r),
                };
                write(&mut rig, reg, &u32::MAX.to_le_bytes());
                rig.read(reg, 4);
            }
            Op::ProgramBar { reg, value } => {
                let reg = 0x10 + 4 * u16::from(reg % 6);
                write(&mut rig, reg, &value.to_le_bytes());
            }
            Op::Command { value } => write(&mut rig, 0x04, &value.to_le_bytes()),
            Op::MsixControl { value } => {
                if let Some(o) = msix {
                    write(&mut rig, o + 2, &value.to_le_bytes());
                }
            }
            Op::Msi { at, size, value } => {
                if let Some(o) = msi {
                    let n = size.bytes(4);
                    write(
                        &mut rig,
                        o + u16::from(at % 0x18),
                        &value.to_le_bytes()[..n],
                    );
                }
            }
        }
        both_seen |= rig.both_msi_kinds_enabled();
        check_registers(&mut rig, &fixed, pin);
        rig.check(both_seen);
    }
    rig.teardown();
});
