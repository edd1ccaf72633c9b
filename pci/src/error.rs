//! The crate's error type: every variant names the BAR, capability, slot or value at fault.

use thiserror::Error;

/// Errors from building config spaces, placing devices on the bus and decoding host data.
///
/// Guest accesses never produce these: bad guest values are ignored and logged instead.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum Error {
    /// BAR index outside 0..=5, or a 64-bit BAR at index 5 (it needs the next register too).
    #[error("BAR {index}: invalid index for a {kind} BAR (0..=5, 64-bit BARs 0..=4)")]
    BarIndex {
        /// The index asked for.
        index: u8,
        /// The BAR type asked for.
        kind: &'static str,
    },
    /// The BAR register (or the upper half of a 64-bit pair) is already used.
    #[error("BAR {index}: register already in use")]
    BarInUse {
        /// The register index that is taken.
        index: u8,
    },
    /// The BAR size is not a power of two within the limits of its type.
    #[error("BAR {index}: size {size:#x} is not a power of two in {min:#x}..={max:#x}")]
    BarSize {
        /// The BAR index (6 for the expansion ROM).
        index: u8,
        /// The size asked for.
        size: u64,
        /// Smallest allowed size for this BAR type.
        min: u64,
        /// Largest allowed size for this BAR type.
        max: u64,
    },
    /// The BAR address is not naturally aligned or does not fit the BAR type.
    #[error("BAR {index}: address {addr:#x} is not aligned to its size {size:#x} or does not fit a {kind} BAR")]
    BarAddress {
        /// The BAR index (6 for the expansion ROM).
        index: u8,
        /// The address asked for.
        addr: u64,
        /// The BAR size.
        size: u64,
        /// The BAR type.
        kind: &'static str,
    },
    /// The expansion ROM BAR is already set.
    #[error("expansion ROM BAR already in use")]
    RomInUse,
    /// A capability does not fit below 0x100.
    #[error("capability {id:#04x} of {len} bytes does not fit at {offset:#x} (standard capabilities end at 0x100)")]
    CapabilitySpace {
        /// Capability id.
        id: u8,
        /// Length including the 2-byte header.
        len: usize,
        /// The first free offset.
        offset: u16,
    },
    /// An extended capability does not fit below 0x1000.
    #[error("extended capability {id:#06x} of {len} bytes does not fit at {offset:#x} (config space ends at 0x1000)")]
    ExtCapabilitySpace {
        /// Extended capability id.
        id: u16,
        /// Length including the 4-byte header.
        len: usize,
        /// The first free offset.
        offset: u16,
    },
    /// The extended capability version does not fit its 4-bit field.
    #[error("extended capability {id:#06x}: version {version} does not fit 4 bits")]
    ExtCapabilityVersion {
        /// Extended capability id.
        id: u16,
        /// The version asked for.
        version: u8,
    },
    /// Device or function number out of range (device 0..=31, function 0..=7).
    #[error("invalid PCI device/function {device:#04x}.{function}")]
    InvalidSlot {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// The slot already holds a device.
    #[error("PCI slot 00:{device:02x}.{function} is already occupied")]
    SlotInUse {
        /// Device number.
        device: u8,
        /// Function number.
        function: u8,
    },
    /// All 32 device numbers of bus 0 are taken.
    #[error("PCI bus 0 has no free device number (32 in use)")]
    BusFull,
    /// MSI-X table size outside 1..=2048.
    #[error("MSI-X table size {0} is outside 1..=2048")]
    MsixTableSize(u16),
    /// MSI-X table or PBA location invalid (BIR above 5 or offset not 8-byte aligned).
    #[error(
        "MSI-X {what}: BIR {bir} offset {offset:#x} is invalid (BIR 0..=5, offset 8-byte aligned)"
    )]
    MsixLocation {
        /// "table" or "PBA".
        what: &'static str,
        /// BAR indicator.
        bir: u8,
        /// Offset within the BAR.
        offset: u32,
    },
    /// MSI vector count not one of 1, 2, 4, 8, 16, 32.
    #[error("MSI vector count {0} is not a power of two up to 32")]
    MsiVectors(u8),
    /// The page size given to the sparse-area helper is not a power of two.
    #[error("page size {0:#x} is not a power of two")]
    PageSize(u64),
    /// A trapped range lies outside the BAR.
    #[error("trapped range {start:#x}..{end:#x} is empty or outside a BAR of size {bar_size:#x}")]
    TrapRange {
        /// Start of the range.
        start: u64,
        /// End of the range.
        end: u64,
        /// The BAR size.
        bar_size: u64,
    },
    /// A capability offset points outside the config space given.
    #[error("capability at {offset:#x} lies outside the {len}-byte config space")]
    CapabilityOffset {
        /// The offset.
        offset: u16,
        /// Length of the config space blob.
        len: usize,
    },
    /// A line of a sysfs `resource` file could not be parsed.
    #[error("sysfs resource line {line}: {reason}")]
    ResourceLine {
        /// 1-based line number.
        line: usize,
        /// What is wrong with it.
        reason: String,
    },
}
