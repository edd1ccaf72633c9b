//! An emulated type-0 config space: 4 KiB of registers with per-byte writable and RW1C masks,
//! BARs with sizing semantics, the expansion ROM BAR, and capability-list builders.
//!
//! BAR addresses the VMM has registered are tracked per BAR ("mapped" address). A guest write
//! reports a [`BarMove`] when a BAR's register address differs from its mapped address while
//! the BAR decodes (command I/O or memory enable, plus the ROM enable bit for the ROM) and the
//! register does not hold a sizing pattern (the guest wrote all-ones to its address bits).
//! So: a write of a new address with decode on moves the BAR at once; with decode off nothing
//! is reported until the guest turns decode on. A 64-bit BAR reprogrammed with decode on moves
//! once per half written (the moves chain: old → intermediate → new).

use log::warn;

use crate::device::{BarKind, BarMove, BarRegion, ConfigWriteOutcome, ROM_BAR_INDEX};
use crate::error::Error;

/// Size of a PCIe config space.
pub const CONFIG_SPACE_SIZE: usize = 4096;

/// Vendor ID register (16 bits).
pub const VENDOR_ID: u16 = 0x00;
/// Device ID register (16 bits).
pub const DEVICE_ID: u16 = 0x02;
/// Command register (16 bits).
pub const COMMAND: u16 = 0x04;
/// Status register (16 bits).
pub const STATUS: u16 = 0x06;
/// Revision ID register (8 bits); the 24-bit class code follows at 0x09.
pub const REVISION_ID: u16 = 0x08;
/// Class code, lowest byte (programming interface) first.
pub const CLASS_CODE: u16 = 0x09;
/// Cache line size register (8 bits).
pub const CACHE_LINE_SIZE: u16 = 0x0c;
/// Header type register (8 bits; bit 7 = multi-function).
pub const HEADER_TYPE: u16 = 0x0e;
/// First BAR register; BAR n is at `BAR0 + 4 * n`.
pub const BAR0: u16 = 0x10;
/// Subsystem vendor ID (16 bits).
pub const SUBSYSTEM_VENDOR_ID: u16 = 0x2c;
/// Subsystem ID (16 bits).
pub const SUBSYSTEM_ID: u16 = 0x2e;
/// Expansion ROM BAR register of a type-0 header.
pub const ROM_BAR: u16 = 0x30;
/// Capabilities pointer (8 bits).
pub const CAPABILITIES_POINTER: u16 = 0x34;
/// Interrupt line (8 bits, written by the guest).
pub const INTERRUPT_LINE: u16 = 0x3c;
/// Interrupt pin (8 bits: 0 none, 1..=4 INTA..INTD).
pub const INTERRUPT_PIN: u16 = 0x3d;
/// First byte of the extended config space (PCIe).
pub const EXT_CAPABILITIES_START: u16 = 0x100;

/// Command register: I/O space decode.
pub const COMMAND_IO: u16 = 1 << 0;
/// Command register: memory space decode.
pub const COMMAND_MEMORY: u16 = 1 << 1;
/// Command register: bus master (DMA, MSI).
pub const COMMAND_BUS_MASTER: u16 = 1 << 2;
/// Command register: parity error response.
pub const COMMAND_PARITY: u16 = 1 << 6;
/// Command register: SERR# enable.
pub const COMMAND_SERR: u16 = 1 << 8;
/// Command register: INTx emulation disable.
pub const COMMAND_INTX_DISABLE: u16 = 1 << 10;
/// Status register: INTx asserted (read-only).
pub const STATUS_INTERRUPT: u16 = 1 << 3;
/// Status register: a capability list is present (read-only).
pub const STATUS_CAP_LIST: u16 = 1 << 4;
/// Status register bits that are RW1C (error bits: 8, 11..=15).
pub const STATUS_RW1C: u16 = 0xf900;

const COMMAND_WRITABLE: u16 = COMMAND_IO
    | COMMAND_MEMORY
    | COMMAND_BUS_MASTER
    | COMMAND_PARITY
    | COMMAND_SERR
    | COMMAND_INTX_DISABLE;

const MEM_ADDR_MASK: u32 = 0xffff_fff0;
const IO_ADDR_MASK: u32 = 0xffff_fffc;
const ROM_ADDR_MASK: u32 = 0xffff_f800;
const ROM_ENABLE: u32 = 1;
const BAR_IO: u32 = 1 << 0;
const BAR_MEM64: u32 = 0b10 << 1;
const BAR_PREFETCHABLE: u32 = 1 << 3;

/// The fixed identity of a type-0 function.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PciHeader {
    /// Vendor ID.
    pub vendor_id: u16,
    /// Device ID.
    pub device_id: u16,
    /// Revision ID.
    pub revision_id: u8,
    /// 24-bit class code: class << 16 | subclass << 8 | programming interface.
    pub class_code: u32,
    /// Subsystem vendor ID.
    pub subsystem_vendor_id: u16,
    /// Subsystem ID.
    pub subsystem_id: u16,
    /// Interrupt pin (0 none, 1..=4 INTA..INTD).
    pub interrupt_pin: u8,
    /// Header type bit 7: the device has more functions than function 0.
    pub multi_function: bool,
}

/// A BAR to add to a [`ConfigSpace`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarSpec {
    /// Address space kind.
    pub kind: BarKind,
    /// Prefetchable (memory BARs only; ignored for I/O).
    pub prefetchable: bool,
    /// Size in bytes: a power of two (I/O 4..=64 KiB, Mem32 16..=2 GiB, Mem64 16..=2^63).
    pub size: u64,
    /// Initial address, naturally aligned; where the VMM registers the BAR.
    pub addr: u64,
}

#[derive(Clone, Copy, Debug)]
struct BarState {
    kind: BarKind,
    prefetchable: bool,
    size: u64,
    /// Address the VMM has the BAR registered at.
    mapped: u64,
    /// The low/high register holds a sizing pattern.
    sizing: [bool; 2],
}

#[derive(Clone, Copy, Debug)]
enum BarSlot {
    Unused,
    Bar(BarState),
    /// Upper half of the 64-bit BAR at the previous index.
    Upper,
}

#[derive(Clone, Copy, Debug)]
struct RomState {
    size: u64,
    mapped: u64,
    sizing: bool,
}

/// An emulated 4 KiB type-0 config space.
#[derive(Clone)]
pub struct ConfigSpace {
    regs: Box<[u8; CONFIG_SPACE_SIZE]>,
    writable: Box<[u8; CONFIG_SPACE_SIZE]>,
    rw1c: Box<[u8; CONFIG_SPACE_SIZE]>,
    bars: [BarSlot; 6],
    rom: Option<RomState>,
    last_cap: Option<u16>,
    next_cap: u16,
    last_ext_cap: Option<u16>,
    next_ext_cap: u16,
}

impl std::fmt::Debug for ConfigSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConfigSpace")
            .field(
                "vendor_id",
                &format_args!("{:#06x}", self.read_u16(VENDOR_ID)),
            )
            .field(
                "device_id",
                &format_args!("{:#06x}", self.read_u16(DEVICE_ID)),
            )
            .field("bars", &self.bars)
            .field("rom", &self.rom)
            .finish_non_exhaustive()
    }
}

/// Byte range `[start, start + len)` overlaps `[reg, reg + reg_len)`.
fn overlaps(start: usize, len: usize, reg: u16, reg_len: usize) -> bool {
    let reg = usize::from(reg);
    start < reg + reg_len && reg < start + len
}

impl ConfigSpace {
    /// A config space with `header`, no BARs and no capabilities. The guest may write the
    /// command register (I/O, memory, bus master, parity, SERR, INTx disable), clear status
    /// error bits (RW1C), and write the cache line size and interrupt line.
    pub fn new(header: &PciHeader) -> Self {
        let mut cs = ConfigSpace {
            regs: Box::new([0; CONFIG_SPACE_SIZE]),
            writable: Box::new([0; CONFIG_SPACE_SIZE]),
            rw1c: Box::new([0; CONFIG_SPACE_SIZE]),
            bars: [BarSlot::Unused; 6],
            rom: None,
            last_cap: None,
            next_cap: 0x40,
            last_ext_cap: None,
            next_ext_cap: EXT_CAPABILITIES_START,
        };
        cs.set_u16(VENDOR_ID, header.vendor_id);
        cs.set_u16(DEVICE_ID, header.device_id);
        cs.set_u8(REVISION_ID, header.revision_id);
        let class = header.class_code.to_le_bytes();
        cs.regs[usize::from(CLASS_CODE)..usize::from(CLASS_CODE) + 3].copy_from_slice(&class[..3]);
        cs.set_u8(HEADER_TYPE, if header.multi_function { 0x80 } else { 0 });
        cs.set_u16(SUBSYSTEM_VENDOR_ID, header.subsystem_vendor_id);
        cs.set_u16(SUBSYSTEM_ID, header.subsystem_id);
        cs.set_u8(INTERRUPT_PIN, header.interrupt_pin);

        cs.set_writable(COMMAND, &COMMAND_WRITABLE.to_le_bytes());
        cs.set_rw1c(STATUS, &STATUS_RW1C.to_le_bytes());
        cs.set_writable(CACHE_LINE_SIZE, &[0xff]);
        cs.set_writable(INTERRUPT_LINE, &[0xff]);
        cs
    }

    /// The raw register bytes.
    pub fn as_bytes(&self) -> &[u8; CONFIG_SPACE_SIZE] {
        &self.regs
    }

    /// A guest read: bytes past the end of config space read as 0xff.
    pub fn read(&self, offset: u16, data: &mut [u8]) {
        for (i, b) in data.iter_mut().enumerate() {
            *b = self
                .regs
                .get(usize::from(offset) + i)
                .copied()
                .unwrap_or(0xff);
        }
    }

    /// A guest write: applies the writable and RW1C masks, tracks BAR sizing and reports
    /// BAR moves. Writes reaching past the end of config space are ignored.
    pub fn write(&mut self, offset: u16, data: &[u8]) -> ConfigWriteOutcome {
        let start = usize::from(offset);
        if data.is_empty() || start + data.len() > CONFIG_SPACE_SIZE {
            warn!(
                "config write of {} bytes at {offset:#x} outside config space ignored",
                data.len()
            );
            return ConfigWriteOutcome::none();
        }
        for (i, &b) in data.iter().enumerate() {
            let o = start + i;
            let w = self.writable[o];
            let c = self.rw1c[o];
            self.regs[o] = ((self.regs[o] & !w) | (b & w)) & !(b & c);
        }

        let mut decode_related = overlaps(start, data.len(), COMMAND, 2);
        for index in 0..6u8 {
            let reg = BAR0 + 4 * u16::from(index);
            if overlaps(start, data.len(), reg, 4) {
                decode_related = true;
                self.note_bar_write(index, start == usize::from(reg) && data.len() == 4, data);
            }
        }
        if overlaps(start, data.len(), ROM_BAR, 4) {
            decode_related = true;
            if let Some(rom) = self.rom.as_mut() {
                rom.sizing = start == usize::from(ROM_BAR)
                    && data.len() == 4
                    && is_sizing(data, ROM_ADDR_MASK);
            }
        }
        if decode_related {
            self.collect_moves()
        } else {
            ConfigWriteOutcome::none()
        }
    }

    /// Records whether BAR register `index` now holds a sizing pattern.
    fn note_bar_write(&mut self, index: u8, full_dword: bool, data: &[u8]) {
        let i = usize::from(index);
        let (owner, half) = match self.bars[i] {
            BarSlot::Bar(_) => (i, 0),
            BarSlot::Upper if i > 0 => (i - 1, 1),
            _ => return,
        };
        if let BarSlot::Bar(bar) = &mut self.bars[owner] {
            let mask = match (bar.kind, half) {
                (_, 1) => u32::MAX,
                (BarKind::Io, _) => IO_ADDR_MASK,
                _ => MEM_ADDR_MASK,
            };
            bar.sizing[half] = full_dword && is_sizing(data, mask);
        }
    }

    /// Compares each decoding BAR's register address with its mapped address.
    fn collect_moves(&mut self) -> ConfigWriteOutcome {
        let mut outcome = ConfigWriteOutcome::none();
        let cmd = self.command();
        for index in 0..6u8 {
            let BarSlot::Bar(bar) = self.bars[usize::from(index)] else {
                continue;
            };
            let decode = match bar.kind {
                BarKind::Io => cmd & COMMAND_IO != 0,
                _ => cmd & COMMAND_MEMORY != 0,
            };
            if !decode || bar.sizing.contains(&true) {
                continue;
            }
            let addr = self.register_address(index, bar.kind);
            if addr != bar.mapped {
                outcome.bar_moves.push(BarMove {
                    index,
                    kind: bar.kind,
                    old_addr: bar.mapped,
                    new_addr: addr,
                    size: bar.size,
                });
                if let BarSlot::Bar(b) = &mut self.bars[usize::from(index)] {
                    b.mapped = addr;
                }
            }
        }
        if let Some(rom) = self.rom.as_mut() {
            let reg = u32::from_le_bytes(read4(&self.regs[..], ROM_BAR));
            let decode = cmd & COMMAND_MEMORY != 0 && reg & ROM_ENABLE != 0;
            let addr = u64::from(reg & ROM_ADDR_MASK);
            if decode && !rom.sizing && addr != rom.mapped {
                outcome.bar_moves.push(BarMove {
                    index: ROM_BAR_INDEX,
                    kind: BarKind::Mem32,
                    old_addr: rom.mapped,
                    new_addr: addr,
                    size: rom.size,
                });
                rom.mapped = addr;
            }
        }
        outcome
    }

    fn register_address(&self, index: u8, kind: BarKind) -> u64 {
        let reg = BAR0 + 4 * u16::from(index);
        let low = u32::from_le_bytes(read4(&self.regs[..], reg));
        match kind {
            BarKind::Io => u64::from(low & IO_ADDR_MASK),
            BarKind::Mem32 => u64::from(low & MEM_ADDR_MASK),
            BarKind::Mem64 => {
                let high = u32::from_le_bytes(read4(&self.regs[..], reg + 4));
                u64::from(high) << 32 | u64::from(low & MEM_ADDR_MASK)
            }
        }
    }

    /// Adds BAR `index` (a 64-bit BAR also takes register `index + 1`). The BAR starts
    /// registered ("mapped") at `spec.addr`.
    pub fn add_bar(&mut self, index: u8, spec: BarSpec) -> Result<(), Error> {
        let kind = spec.kind;
        let last_index = if kind == BarKind::Mem64 { 4 } else { 5 };
        if index > last_index {
            return Err(Error::BarIndex {
                index,
                kind: kind.name(),
            });
        }
        let i = usize::from(index);
        if !matches!(self.bars[i], BarSlot::Unused) {
            return Err(Error::BarInUse { index });
        }
        if kind == BarKind::Mem64 && !matches!(self.bars[i + 1], BarSlot::Unused) {
            return Err(Error::BarInUse { index: index + 1 });
        }
        let (min, max) = match kind {
            BarKind::Io => (4, 1 << 16),
            BarKind::Mem32 => (16, 1 << 31),
            BarKind::Mem64 => (16, 1 << 63),
        };
        let size = spec.size;
        if !size.is_power_of_two() || size < min || size > max {
            return Err(Error::BarSize {
                index,
                size,
                min,
                max,
            });
        }
        let addr = spec.addr;
        let fits = match kind {
            BarKind::Mem64 => addr.checked_add(size).is_some(),
            _ => addr.checked_add(size).is_some_and(|end| end <= 1 << 32),
        };
        if addr % size != 0 || !fits {
            return Err(Error::BarAddress {
                index,
                addr,
                size,
                kind: kind.name(),
            });
        }

        let prefetchable = spec.prefetchable && kind.is_memory();
        let size_mask = !(size - 1);
        let (type_bits, addr_mask) = match kind {
            BarKind::Io => (BAR_IO, IO_ADDR_MASK),
            BarKind::Mem32 => (0, MEM_ADDR_MASK),
            BarKind::Mem64 => (BAR_MEM64, MEM_ADDR_MASK),
        };
        let type_bits = type_bits | if prefetchable { BAR_PREFETCHABLE } else { 0 };
        let reg = BAR0 + 4 * u16::from(index);
        // Truncations keep the low and high halves of the 64-bit address and mask.
        self.set_u32(reg, (addr as u32 & addr_mask) | type_bits);
        self.set_writable(reg, &((size_mask as u32) & addr_mask).to_le_bytes());
        if kind == BarKind::Mem64 {
            self.set_u32(reg + 4, (addr >> 32) as u32);
            self.set_writable(reg + 4, &((size_mask >> 32) as u32).to_le_bytes());
            self.bars[i + 1] = BarSlot::Upper;
        }
        self.bars[i] = BarSlot::Bar(BarState {
            kind,
            prefetchable,
            size,
            mapped: addr,
            sizing: [false; 2],
        });
        Ok(())
    }

    /// Adds the expansion ROM BAR: `size` a power of two in 2 KiB..=2 GiB, `addr` aligned
    /// and below 4 GiB. The ROM decodes when memory decode and the ROM enable bit are on.
    pub fn add_rom(&mut self, size: u64, addr: u64) -> Result<(), Error> {
        if self.rom.is_some() {
            return Err(Error::RomInUse);
        }
        let (min, max) = (2048, 1 << 31);
        if !size.is_power_of_two() || size < min || size > max {
            return Err(Error::BarSize {
                index: ROM_BAR_INDEX,
                size,
                min,
                max,
            });
        }
        if addr % size != 0 || addr.checked_add(size).is_none_or(|end| end > 1 << 32) {
            return Err(Error::BarAddress {
                index: ROM_BAR_INDEX,
                addr,
                size,
                kind: "expansion ROM",
            });
        }
        // Both values fit 32 bits: checked above.
        self.set_u32(ROM_BAR, addr as u32);
        self.set_writable(
            ROM_BAR,
            &((!(size - 1) as u32 & ROM_ADDR_MASK) | ROM_ENABLE).to_le_bytes(),
        );
        self.rom = Some(RomState {
            size,
            mapped: addr,
            sizing: false,
        });
        Ok(())
    }

    /// The BARs and ROM at the addresses the VMM has them registered (updated by every
    /// reported move), in index order.
    pub fn bars(&self) -> Vec<BarRegion> {
        let mut out: Vec<BarRegion> = self
            .bars
            .iter()
            .enumerate()
            .filter_map(|(i, slot)| match slot {
                BarSlot::Bar(b) => Some(BarRegion {
                    index: i as u8, // i < 6
                    kind: b.kind,
                    prefetchable: b.prefetchable,
                    addr: b.mapped,
                    size: b.size,
                }),
                _ => None,
            })
            .collect();
        if let Some(rom) = self.rom {
            out.push(BarRegion {
                index: ROM_BAR_INDEX,
                kind: BarKind::Mem32,
                prefetchable: false,
                addr: rom.mapped,
                size: rom.size,
            });
        }
        out
    }

    /// The BAR (or ROM, [`ROM_BAR_INDEX`]) that the register at `offset` belongs to, if any.
    pub fn bar_of_register(&self, offset: u16) -> Option<u8> {
        if (ROM_BAR..ROM_BAR + 4).contains(&offset) {
            return self.rom.map(|_| ROM_BAR_INDEX);
        }
        if !(BAR0..BAR0 + 24).contains(&offset) {
            return None;
        }
        let i = usize::from((offset - BAR0) / 4);
        match self.bars[i] {
            BarSlot::Bar(_) => Some(i as u8), // i < 6
            BarSlot::Upper => Some(i as u8 - 1),
            BarSlot::Unused => None,
        }
    }

    /// The address currently programmed in BAR `index`'s register(s) (may differ from the
    /// registered address while decode is off, or hold a sizing pattern).
    pub fn bar_address(&self, index: u8) -> Option<u64> {
        if index == ROM_BAR_INDEX {
            return self
                .rom
                .map(|_| u64::from(self.read_u32(ROM_BAR) & ROM_ADDR_MASK));
        }
        match self.bars.get(usize::from(index))? {
            BarSlot::Bar(b) => Some(self.register_address(index, b.kind)),
            _ => None,
        }
    }

    /// The command register.
    pub fn command(&self) -> u16 {
        self.read_u16(COMMAND)
    }

    /// Memory space decode is on.
    pub fn memory_enabled(&self) -> bool {
        self.command() & COMMAND_MEMORY != 0
    }

    /// I/O space decode is on.
    pub fn io_enabled(&self) -> bool {
        self.command() & COMMAND_IO != 0
    }

    /// Bus mastering (DMA and MSI) is on.
    pub fn bus_master_enabled(&self) -> bool {
        self.command() & COMMAND_BUS_MASTER != 0
    }

    /// INTx is disabled by the guest.
    pub fn intx_disabled(&self) -> bool {
        self.command() & COMMAND_INTX_DISABLE != 0
    }

    /// The interrupt line the guest wrote.
    pub fn interrupt_line(&self) -> u8 {
        self.read_u8(INTERRUPT_LINE)
    }

    /// Sets status bits from the device side (e.g. error bits the guest then clears, or
    /// [`STATUS_INTERRUPT`]).
    pub fn set_status_bits(&mut self, bits: u16) {
        let status = self.read_u16(STATUS) | bits;
        self.set_u16(STATUS, status);
    }

    /// Clears status bits from the device side.
    pub fn clear_status_bits(&mut self, bits: u16) {
        let status = self.read_u16(STATUS) & !bits;
        self.set_u16(STATUS, status);
    }

    /// Appends a standard capability: `body` is what follows the id and next-pointer bytes.
    /// Placed at the next free dword-aligned offset from 0x40, linked from the capabilities
    /// pointer or the previous capability, and sets the status capability-list bit.
    /// Returns the capability's offset. The body is read-only until [`Self::set_writable`].
    pub fn add_capability(&mut self, id: u8, body: &[u8]) -> Result<u8, Error> {
        let len = 2 + body.len();
        let offset = self.next_cap.next_multiple_of(4);
        if usize::from(offset) + len > usize::from(EXT_CAPABILITIES_START) {
            return Err(Error::CapabilitySpace { id, len, offset });
        }
        let o = usize::from(offset);
        self.regs[o] = id;
        self.regs[o + 1] = 0;
        self.regs[o + 2..o + len].copy_from_slice(body);
        let offset8 = offset as u8; // offset < 0x100
        match self.last_cap {
            Some(prev) => self.set_u8(prev + 1, offset8),
            None => self.set_u8(CAPABILITIES_POINTER, offset8),
        }
        self.last_cap = Some(offset);
        self.next_cap = offset + len as u16;
        self.set_status_bits(STATUS_CAP_LIST);
        Ok(offset8)
    }

    /// Appends an extended capability (`body` follows the 4-byte header) at the next free
    /// dword-aligned offset from 0x100, linking the previous one's next pointer.
    /// Returns its offset.
    pub fn add_extended_capability(
        &mut self,
        id: u16,
        version: u8,
        body: &[u8],
    ) -> Result<u16, Error> {
        if version > 0xf {
            return Err(Error::ExtCapabilityVersion { id, version });
        }
        let len = 4 + body.len();
        let offset = self.next_ext_cap.next_multiple_of(4);
        if usize::from(offset) + len > CONFIG_SPACE_SIZE {
            return Err(Error::ExtCapabilitySpace { id, len, offset });
        }
        self.set_u32(offset, u32::from(id) | u32::from(version) << 16);
        let o = usize::from(offset);
        self.regs[o + 4..o + len].copy_from_slice(body);
        if let Some(prev) = self.last_ext_cap {
            let header = self.read_u32(prev) & 0x000f_ffff;
            self.set_u32(prev, header | u32::from(offset) << 20);
        }
        self.last_ext_cap = Some(offset);
        self.next_ext_cap = offset + len as u16;
        Ok(offset)
    }

    /// Makes the bits set in `mask` (one byte per register byte from `offset`) guest-writable;
    /// clears the others in that range. Bytes past the end are ignored.
    pub fn set_writable(&mut self, offset: u16, mask: &[u8]) {
        set_bytes(&mut self.writable[..], offset, mask);
    }

    /// Makes the bits set in `mask` write-1-to-clear (and not plain-writable).
    pub fn set_rw1c(&mut self, offset: u16, mask: &[u8]) {
        set_bytes(&mut self.rw1c[..], offset, mask);
        for (i, m) in mask.iter().enumerate() {
            if let Some(w) = self.writable.get_mut(usize::from(offset) + i) {
                *w &= !m;
            }
        }
    }

    /// Device-side read of one byte (0xff past the end).
    pub fn read_u8(&self, offset: u16) -> u8 {
        let mut b = [0u8; 1];
        self.read(offset, &mut b);
        b[0]
    }

    /// Device-side little-endian read of 16 bits.
    pub fn read_u16(&self, offset: u16) -> u16 {
        let mut b = [0u8; 2];
        self.read(offset, &mut b);
        u16::from_le_bytes(b)
    }

    /// Device-side little-endian read of 32 bits.
    pub fn read_u32(&self, offset: u16) -> u32 {
        u32::from_le_bytes(read4(&self.regs[..], offset))
    }

    /// Device-side store of one byte, ignoring the masks (bytes past the end are dropped).
    pub fn set_u8(&mut self, offset: u16, value: u8) {
        set_bytes(&mut self.regs[..], offset, &[value]);
    }

    /// Device-side little-endian store of 16 bits, ignoring the masks.
    pub fn set_u16(&mut self, offset: u16, value: u16) {
        set_bytes(&mut self.regs[..], offset, &value.to_le_bytes());
    }

    /// Device-side little-endian store of 32 bits, ignoring the masks.
    pub fn set_u32(&mut self, offset: u16, value: u32) {
        set_bytes(&mut self.regs[..], offset, &value.to_le_bytes());
    }
}

/// A full-dword write sets every address bit in `mask`.
fn is_sizing(data: &[u8], mask: u32) -> bool {
    let Ok(bytes) = <[u8; 4]>::try_from(data) else {
        return false;
    };
    u32::from_le_bytes(bytes) & mask == mask
}

fn read4(regs: &[u8], offset: u16) -> [u8; 4] {
    let mut b = [0xff; 4];
    for (i, v) in b.iter_mut().enumerate() {
        if let Some(r) = regs.get(usize::from(offset) + i) {
            *v = *r;
        }
    }
    b
}

fn set_bytes(dst: &mut [u8], offset: u16, src: &[u8]) {
    for (i, s) in src.iter().enumerate() {
        if let Some(d) = dst.get_mut(usize::from(offset) + i) {
            *d = *s;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::capabilities::{capabilities, extended_capabilities, Capability};

    const GIB: u64 = 1 << 30;

    fn space() -> ConfigSpace {
        ConfigSpace::new(&PciHeader {
            vendor_id: 0x1234,
            device_id: 0x5678,
            revision_id: 2,
            class_code: 0x03_02_00,
            subsystem_vendor_id: 0xaaaa,
            subsystem_id: 0xbbbb,
            interrupt_pin: 1,
            multi_function: false,
        })
    }

    fn w32(cs: &mut ConfigSpace, off: u16, v: u32) -> ConfigWriteOutcome {
        cs.write(off, &v.to_le_bytes())
    }

    fn r32(cs: &ConfigSpace, off: u16) -> u32 {
        let mut b = [0; 4];
        cs.read(off, &mut b);
        u32::from_le_bytes(b)
    }

    /// Size as Linux computes it: write all-ones, read back, restore.
    fn size_bar(cs: &mut ConfigSpace, off: u16, addr_mask: u32) -> u32 {
        let orig = r32(cs, off);
        let out = w32(cs, off, u32::MAX);
        assert!(out.is_empty(), "sizing reported {out:?}");
        let sz = r32(cs, off);
        let out = w32(cs, off, orig);
        assert!(out.is_empty(), "restore reported {out:?}");
        assert_eq!(r32(cs, off), orig);
        sz & addr_mask
    }

    #[test]
    fn header_fields_and_read_only_ids() {
        let mut cs = space();
        assert_eq!(r32(&cs, 0), 0x5678_1234);
        assert_eq!(r32(&cs, 8), 0x0302_0002);
        assert_eq!(r32(&cs, 0x2c), 0xbbbb_aaaa);
        assert_eq!(cs.read_u8(INTERRUPT_PIN), 1);
        assert_eq!(cs.read_u8(HEADER_TYPE), 0);
        w32(&mut cs, 0, 0xffff_ffff);
        w32(&mut cs, 8, 0);
        assert_eq!(r32(&cs, 0), 0x5678_1234);
        assert_eq!(r32(&cs, 8), 0x0302_0002);
        // Interrupt line is the guest's; the pin is not.
        cs.write(INTERRUPT_LINE, &[0x0b, 0x04]);
        assert_eq!(cs.interrupt_line(), 0x0b);
        assert_eq!(cs.read_u8(INTERRUPT_PIN), 1);
        // Multi-function bit.
        let mf = ConfigSpace::new(&PciHeader {
            multi_function: true,
            ..Default::default()
        });
        assert_eq!(mf.read_u8(HEADER_TYPE), 0x80);
    }

    #[test]
    fn command_register_bits() {
        let mut cs = space();
        cs.write(COMMAND, &0xffffu16.to_le_bytes());
        assert_eq!(cs.command(), 0x0547);
        assert!(cs.io_enabled() && cs.memory_enabled());
        assert!(cs.bus_master_enabled() && cs.intx_disabled());
        cs.write(COMMAND, &[0x02]);
        assert!(cs.memory_enabled() && !cs.io_enabled() && !cs.bus_master_enabled());
        // A byte write to the high byte leaves the low byte alone.
        cs.write(COMMAND + 1, &[0x00]);
        assert!(cs.memory_enabled() && !cs.intx_disabled());
    }

    #[test]
    fn status_errors_are_rw1c() {
        let mut cs = space();
        cs.add_capability(0x09, &[0; 2]).unwrap();
        cs.set_status_bits(0x8000 | 0x2000 | 0x0100);
        // Writing 0 clears nothing; writing ones to clean or read-only bits does nothing.
        cs.write(STATUS, &0u16.to_le_bytes());
        assert_eq!(cs.read_u16(STATUS), 0xa110);
        cs.write(STATUS, &0x2000u16.to_le_bytes());
        assert_eq!(cs.read_u16(STATUS), 0x8110);
        // A dword write to command+status: command written, status bit 15 cleared.
        w32(&mut cs, COMMAND, 0x8000_0002);
        assert_eq!(cs.read_u16(STATUS), 0x0110);
        assert_eq!(cs.command(), 0x0002);
        // The capability-list bit survives all-ones.
        cs.write(STATUS, &0xffffu16.to_le_bytes());
        assert_eq!(cs.read_u16(STATUS), STATUS_CAP_LIST);
    }

    #[test]
    fn mem32_bar_sizing_and_moves() {
        let mut cs = space();
        cs.add_bar(
            0,
            BarSpec {
                kind: BarKind::Mem32,
                prefetchable: false,
                size: 1 << 20,
                addr: 0xc000_0000,
            },
        )
        .unwrap();
        assert_eq!(r32(&cs, BAR0), 0xc000_0000);
        assert_eq!(size_bar(&mut cs, BAR0, MEM_ADDR_MASK), 0xfff0_0000);
        // Type bits are read-only.
        w32(&mut cs, BAR0, 0xc010_000f);
        assert_eq!(r32(&cs, BAR0), 0xc010_0000);
        // Decode off: no move yet, the registered address stays.
        assert_eq!(cs.bars()[0].addr, 0xc000_0000);
        assert_eq!(cs.bar_address(0), Some(0xc010_0000));
        // Decode on with a new address: one move.
        let out = cs.write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(
            out.bar_moves,
            vec![BarMove {
                index: 0,
                kind: BarKind::Mem32,
                old_addr: 0xc000_0000,
                new_addr: 0xc010_0000,
                size: 1 << 20
            }]
        );
        assert_eq!(cs.bars()[0].addr, 0xc010_0000);
        // Decode stays on: writing a new address moves at once; rewriting it does not.
        let out = w32(&mut cs, BAR0, 0xc020_0000);
        assert_eq!(out.bar_moves.len(), 1);
        assert_eq!(out.bar_moves[0].old_addr, 0xc010_0000);
        assert_eq!(out.bar_moves[0].new_addr, 0xc020_0000);
        assert!(w32(&mut cs, BAR0, 0xc020_0000).is_empty());
        // Sizing with decode on is not a move either.
        assert_eq!(size_bar(&mut cs, BAR0, MEM_ADDR_MASK), 0xfff0_0000);
        assert_eq!(cs.bars()[0].addr, 0xc020_0000);
        // Toggling decode with the same address: nothing.
        assert!(cs.write(COMMAND, &[0]).is_empty());
        assert!(cs.write(COMMAND, &[2]).is_empty());
    }

    #[test]
    fn mem64_prefetchable_pair_of_256_gib() {
        let mut cs = space();
        let size = 256 * GIB;
        let addr = 0x100_0000_0000;
        cs.add_bar(
            2,
            BarSpec {
                kind: BarKind::Mem64,
                prefetchable: true,
                size,
                addr,
            },
        )
        .unwrap();
        let lo = BAR0 + 8;
        let hi = BAR0 + 12;
        assert_eq!(r32(&cs, lo), 0x0000_000c);
        assert_eq!(r32(&cs, hi), 0x0000_0100);
        // Size both halves as Linux does.
        let lo_mask = size_bar(&mut cs, lo, MEM_ADDR_MASK);
        assert_eq!(lo_mask, 0);
        let hi_mask = size_bar(&mut cs, hi, u32::MAX);
        assert_eq!(hi_mask, 0xffff_ffc0);
        let mask = u64::from(hi_mask) << 32 | u64::from(lo_mask);
        assert_eq!(!mask + 1, size);
        // Low sizing read keeps the type bits.
        w32(&mut cs, lo, u32::MAX);
        assert_eq!(r32(&cs, lo), 0x0000_000c);
        w32(&mut cs, lo, 0);

        let bars = cs.bars();
        assert_eq!(
            bars,
            vec![BarRegion {
                index: 2,
                kind: BarKind::Mem64,
                prefetchable: true,
                addr,
                size
            }]
        );
        assert_eq!(cs.bar_of_register(hi), Some(2));
        assert_eq!(cs.bar_of_register(BAR0), None);

        // Move with decode off (as Linux does for 64-bit BARs): reported on decode enable.
        assert!(w32(&mut cs, lo, 0).is_empty());
        assert!(w32(&mut cs, hi, 0x200).is_empty());
        let out = cs.write(COMMAND, &COMMAND_MEMORY.to_le_bytes());
        assert_eq!(
            out.bar_moves,
            vec![BarMove {
                index: 2,
                kind: BarKind::Mem64,
                old_addr: addr,
                new_addr: 0x200_0000_0000,
                size
            }]
        );
        // Sizing the high half with decode on: no move.
        assert_eq!(size_bar(&mut cs, hi, u32::MAX), 0xffff_ffc0);
        assert_eq!(cs.bars()[0].addr, 0x200_0000_0000);
    }

    #[test]
    fn io_bar_follows_io_decode() {
        let mut cs = space();
        cs.add_bar(
            4,
            BarSpec {
                kind: BarKind::Io,
                prefetchable: true, // meaningless for I/O: ignored
                size: 32,
                addr: 0x1000,
            },
        )
        .unwrap();
        let reg = BAR0 + 16;
        assert_eq!(r32(&cs, reg), 0x1001);
        assert_eq!(size_bar(&mut cs, reg, IO_ADDR_MASK), 0xffff_ffe0);
        w32(&mut cs, reg, 0x2000);
        assert_eq!(r32(&cs, reg), 0x2001);
        // Memory decode does not move an I/O BAR.
        assert!(cs.write(COMMAND, &[COMMAND_MEMORY as u8]).is_empty());
        let out = cs.write(COMMAND, &[(COMMAND_MEMORY | COMMAND_IO) as u8]);
        assert_eq!(out.bar_moves.len(), 1);
        assert_eq!(out.bar_moves[0].kind, BarKind::Io);
        assert_eq!(out.bar_moves[0].new_addr, 0x2000);
        assert!(!cs.bars()[0].prefetchable);
    }

    #[test]
    fn rom_bar_sizing_and_enable() {
        let mut cs = space();
        cs.add_rom(64 << 10, 0xc100_0000).unwrap();
        assert_eq!(r32(&cs, ROM_BAR), 0xc100_0000);
        // Linux sizes the ROM writing ~enable.
        assert!(w32(&mut cs, ROM_BAR, 0xffff_fffe).is_empty());
        assert_eq!(r32(&cs, ROM_BAR), 0xffff_0000);
        w32(&mut cs, ROM_BAR, 0xc100_0000);
        cs.write(COMMAND, &[COMMAND_MEMORY as u8]);
        // New address with the ROM disabled: no move; enabling it moves.
        assert!(w32(&mut cs, ROM_BAR, 0xc102_0000).is_empty());
        let out = w32(&mut cs, ROM_BAR, 0xc102_0001);
        assert_eq!(
            out.bar_moves,
            vec![BarMove {
                index: ROM_BAR_INDEX,
                kind: BarKind::Mem32,
                old_addr: 0xc100_0000,
                new_addr: 0xc102_0000,
                size: 64 << 10
            }]
        );
        assert_eq!(r32(&cs, ROM_BAR), 0xc102_0001);
        assert_eq!(cs.bar_address(ROM_BAR_INDEX), Some(0xc102_0000));
        assert_eq!(cs.bars().last().map(|b| b.index), Some(ROM_BAR_INDEX));
        // No ROM: the register reads 0 and ignores writes.
        let mut plain = space();
        w32(&mut plain, ROM_BAR, u32::MAX);
        assert_eq!(r32(&plain, ROM_BAR), 0);
    }

    #[test]
    fn absent_bars_read_zero_when_sized() {
        let mut cs = space();
        for i in 0..6 {
            assert_eq!(size_bar(&mut cs, BAR0 + 4 * i, u32::MAX), 0);
        }
    }

    #[test]
    fn bar_validation() {
        let mut cs = space();
        let spec = |kind, size, addr| BarSpec {
            kind,
            prefetchable: false,
            size,
            addr,
        };
        assert!(matches!(
            cs.add_bar(5, spec(BarKind::Mem64, 4096, 0)),
            Err(Error::BarIndex { index: 5, .. })
        ));
        assert!(matches!(
            cs.add_bar(6, spec(BarKind::Mem32, 4096, 0)),
            Err(Error::BarIndex { index: 6, .. })
        ));
        assert!(matches!(
            cs.add_bar(0, spec(BarKind::Mem32, 3000, 0)),
            Err(Error::BarSize { .. })
        ));
        assert!(matches!(
            cs.add_bar(0, spec(BarKind::Mem32, 8, 0)),
            Err(Error::BarSize { .. })
        ));
        assert!(matches!(
            cs.add_bar(0, spec(BarKind::Mem32, 4096, 0x800)),
            Err(Error::BarAddress { .. })
        ));
        assert!(matches!(
            cs.add_bar(0, spec(BarKind::Mem32, 4096, 1 << 32)),
            Err(Error::BarAddress { .. })
        ));
        assert!(matches!(
            cs.add_bar(0, spec(BarKind::Mem64, 4096, u64::MAX - 4095)),
            Err(Error::BarAddress { .. })
        ));
        cs.add_bar(1, spec(BarKind::Mem64, 4096, 1 << 40)).unwrap();
        assert_eq!(
            cs.add_bar(2, spec(BarKind::Mem32, 4096, 0)),
            Err(Error::BarInUse { index: 2 })
        );
        assert_eq!(
            cs.add_bar(0, spec(BarKind::Mem64, 4096, 0)),
            Err(Error::BarInUse { index: 1 })
        );
        assert!(matches!(
            cs.add_rom(1024, 0),
            Err(Error::BarSize { index: 6, .. })
        ));
        cs.add_rom(2048, 0).unwrap();
        assert_eq!(cs.add_rom(2048, 0), Err(Error::RomInUse));
    }

    #[test]
    fn capability_builder_chains() {
        let mut cs = space();
        assert_eq!(cs.read_u16(STATUS) & STATUS_CAP_LIST, 0);
        assert!(capabilities(cs.as_bytes()).is_empty());
        let a = cs.add_capability(0x01, &[0xaa; 6]).unwrap();
        let b = cs.add_capability(0x05, &[0xbb; 3]).unwrap();
        let c = cs.add_capability(0x10, &[]).unwrap();
        assert_eq!((a, b, c), (0x40, 0x48, 0x50));
        assert_eq!(cs.read_u8(CAPABILITIES_POINTER), 0x40);
        assert_ne!(cs.read_u16(STATUS) & STATUS_CAP_LIST, 0);
        assert_eq!(cs.read_u8(0x42), 0xaa);
        assert_eq!(
            capabilities(cs.as_bytes()),
            vec![
                Capability {
                    id: 1,
                    offset: 0x40
                },
                Capability {
                    id: 5,
                    offset: 0x48
                },
                Capability {
                    id: 0x10,
                    offset: 0x50
                },
            ]
        );
        // Bodies are read-only until made writable.
        cs.write(0x42, &[0]);
        assert_eq!(cs.read_u8(0x42), 0xaa);
        cs.set_writable(0x42, &[0x0f]);
        cs.write(0x42, &[0x00]);
        assert_eq!(cs.read_u8(0x42), 0xa0);
        // Space runs out below 0x100.
        assert!(matches!(
            cs.add_capability(0x09, &[0; 0xb0]),
            Err(Error::CapabilitySpace { id: 0x09, .. })
        ));
    }

    #[test]
    fn extended_capability_builder_chains() {
        let mut cs = space();
        assert!(extended_capabilities(cs.as_bytes()).is_empty());
        let a = cs.add_extended_capability(0x0001, 2, &[0; 0x44]).unwrap();
        let b = cs
            .add_extended_capability(0x0003, 1, &[1, 2, 3, 4, 5, 6, 7, 8])
            .unwrap();
        assert_eq!((a, b), (0x100, 0x148));
        let caps = extended_capabilities(cs.as_bytes());
        assert_eq!(caps.len(), 2);
        assert_eq!((caps[0].id, caps[0].version, caps[0].next), (1, 2, 0x148));
        assert_eq!((caps[1].id, caps[1].version, caps[1].next), (3, 1, 0));
        assert_eq!(cs.read_u8(0x14c), 1);
        assert!(matches!(
            cs.add_extended_capability(0x0b, 16, &[]),
            Err(Error::ExtCapabilityVersion { .. })
        ));
        assert!(matches!(
            cs.add_extended_capability(0x0b, 1, &[0; 0x1000]),
            Err(Error::ExtCapabilitySpace { .. })
        ));
    }

    #[test]
    fn accesses_past_the_end_never_panic() {
        let mut cs = space();
        let mut b = [0u8; 4];
        cs.read(0xffe, &mut b);
        assert_eq!(&b[2..], &[0xff, 0xff]);
        cs.read(0xffff, &mut b);
        assert_eq!(b, [0xff; 4]);
        assert!(cs.write(0xffe, &[1, 2, 3, 4]).is_empty());
        assert!(cs.write(0xffff, &[1]).is_empty());
        assert!(cs.write(0, &[]).is_empty());
        assert_eq!(cs.read_u32(0xffe), 0xffff_0000);
    }
}
