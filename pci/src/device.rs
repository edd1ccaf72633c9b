//! The interface between a PCI device and the bus, and the types a config write reports.

use std::fmt;

/// BAR index used for the expansion ROM (the same index VFIO gives the ROM region).
pub const ROM_BAR_INDEX: u8 = 6;

/// What kind of address space a BAR decodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BarKind {
    /// I/O space (BAR bit 0 set); placed on the port I/O bus.
    Io,
    /// 32-bit memory space.
    Mem32,
    /// 64-bit memory space: this register and the next one form the address.
    Mem64,
}

impl BarKind {
    /// True for the two memory kinds.
    pub fn is_memory(self) -> bool {
        !matches!(self, BarKind::Io)
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            BarKind::Io => "I/O",
            BarKind::Mem32 => "32-bit memory",
            BarKind::Mem64 => "64-bit memory",
        }
    }
}

impl fmt::Display for BarKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One BAR of a device (or its expansion ROM, index [`ROM_BAR_INDEX`]) where the VMM has it
/// registered: the vmm puts `[addr, addr + size)` on its MMIO or PIO bus.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarRegion {
    /// BAR index 0..=5, or [`ROM_BAR_INDEX`].
    pub index: u8,
    /// Address space kind (the ROM is [`BarKind::Mem32`]).
    pub kind: BarKind,
    /// Prefetchable memory BAR.
    pub prefetchable: bool,
    /// Guest-physical address (or port).
    pub addr: u64,
    /// Size in bytes (a power of two).
    pub size: u64,
}

/// A BAR the guest moved: the vmm moves the bus range (and any memslots, DMA mappings)
/// from `old_addr` to `new_addr`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BarMove {
    /// BAR index 0..=5, or [`ROM_BAR_INDEX`].
    pub index: u8,
    /// Address space kind.
    pub kind: BarKind,
    /// Where the BAR was registered.
    pub old_addr: u64,
    /// Where the guest put it.
    pub new_addr: u64,
    /// BAR size in bytes.
    pub size: u64,
}

/// What a config-space write asks of the VMM.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ConfigWriteOutcome {
    /// BARs to move, in the order they happened.
    pub bar_moves: Vec<BarMove>,
}

impl ConfigWriteOutcome {
    /// Nothing to do.
    pub fn none() -> Self {
        Self::default()
    }

    /// True when the write asks nothing of the VMM.
    pub fn is_empty(&self) -> bool {
        self.bar_moves.is_empty()
    }

    /// Appends `other`'s requests after this one's.
    pub fn merge(&mut self, other: ConfigWriteOutcome) {
        self.bar_moves.extend(other.bar_moves);
    }
}

/// A PCI function as the bus and the VMM see it.
///
/// Config accesses come from [`crate::PciBus`] with `offset` in 0..4096 and `data.len()` in
/// {1, 2, 4}, never crossing a dword boundary. BAR accesses come from the VMM's MMIO/PIO buses
/// with `offset` relative to the BAR start. Implementations must not panic on any guest input.
pub trait PciDevice: Send {
    /// Reads config space at `offset` into `data`.
    fn read_config(&mut self, offset: u16, data: &mut [u8]);

    /// Writes `data` to config space at `offset`; reports BAR moves.
    fn write_config(&mut self, offset: u16, data: &[u8]) -> ConfigWriteOutcome;

    /// The BARs (and ROM) to register on the VMM's buses, at their current addresses.
    /// Devices without BARs keep the default (none).
    fn bars(&self) -> Vec<BarRegion> {
        Vec::new()
    }

    /// A read of BAR `bar` (0..=5, or [`ROM_BAR_INDEX`]) at `offset`.
    /// The default answers all-ones, like an unclaimed access.
    fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]) {
        let _ = (bar, offset);
        data.fill(0xff);
    }

    /// A write to BAR `bar` at `offset`. The default ignores it.
    fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]) {
        let _ = (bar, offset, data);
    }
}
