//! The two ways a guest reaches config space, both decode-and-dispatch only:
//! configuration mechanism #1 (ports 0xCF8 address, 0xCFC..=0xCFF data) and PCIe ECAM (MMIO).

use std::sync::{Arc, Mutex, MutexGuard};

use log::warn;

use crate::bus::{PciAddress, PciBus};
use crate::device::ConfigWriteOutcome;

/// Enable bit of the 0xCF8 address register.
pub const CONFIG_ADDRESS_ENABLE: u32 = 1 << 31;
/// Bits of 0xCF8 that are stored: enable, bus, device, function, dword register.
const CONFIG_ADDRESS_MASK: u32 = 0x80ff_fffc;
/// Ports covered by [`PciConfigIo`] from its base (0xCF8..=0xCFF).
pub const PCI_CONFIG_IO_LEN: u64 = 8;
/// Offset of the data port (0xCFC) from the base.
const DATA_PORT: u64 = 4;
/// ECAM bytes per bus (32 devices × 8 functions × 4 KiB).
pub const ECAM_BUS_SIZE: u64 = 1 << 20;

/// Decodes a 0xCF8 value: `None` while the enable bit is clear, otherwise the function and
/// the dword-aligned register 0..=0xFC.
pub fn decode_config_address(value: u32) -> Option<(PciAddress, u16)> {
    if value & CONFIG_ADDRESS_ENABLE == 0 {
        return None;
    }
    let addr = PciAddress {
        bus: ((value >> 16) & 0xff) as u8,
        device: ((value >> 11) & 0x1f) as u8,
        function: ((value >> 8) & 0x7) as u8,
    };
    Some((addr, (value & 0xfc) as u16))
}

/// Decodes an offset into the ECAM window: bus (bits 27:20), device (19:15), function
/// (14:12), register (11:0). `None` past 256 buses.
pub fn decode_ecam(offset: u64) -> Option<(PciAddress, u16)> {
    if offset >= 256 * ECAM_BUS_SIZE {
        return None;
    }
    let addr = PciAddress {
        bus: (offset >> 20) as u8,
        device: ((offset >> 15) & 0x1f) as u8,
        function: ((offset >> 12) & 0x7) as u8,
    };
    Some((addr, (offset & 0xfff) as u16))
}

fn lock_bus(bus: &Mutex<PciBus>) -> MutexGuard<'_, PciBus> {
    bus.lock().unwrap_or_else(|poisoned| {
        warn!("PCI bus lock poisoned; continuing");
        poisoned.into_inner()
    })
}

/// Configuration mechanism #1, on the PIO bus at 0xCF8 with length [`PCI_CONFIG_IO_LEN`].
/// Offsets are relative to 0xCF8. Only dword accesses reach the address latch; the data port
/// takes byte, word and dword accesses at 0xCFC + n (n + len ≤ 4).
#[derive(Debug)]
pub struct PciConfigIo {
    bus: Arc<Mutex<PciBus>>,
    address: u32,
}

impl PciConfigIo {
    /// Config ports dispatching to `bus`, with the latch cleared.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        PciConfigIo { bus, address: 0 }
    }

    /// The address latch (0xCF8) as the guest reads it.
    pub fn config_address(&self) -> u32 {
        self.address
    }

    /// The function and register a data-port access at `offset` (≥ 4) of `len` bytes
    /// reaches, if the latch is enabled and the access fits in the data dword.
    fn target(&self, offset: u64, len: usize) -> Option<(PciAddress, u16)> {
        let n = offset.checked_sub(DATA_PORT)?;
        if !matches!(len, 1 | 2 | 4) || n + len as u64 > 4 {
            return None;
        }
        let (addr, reg) = decode_config_address(self.address)?;
        Some((addr, reg + n as u16)) // n < 4
    }

    /// A port read at 0xCF8 + `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        if offset == 0 && data.len() == 4 {
            data.copy_from_slice(&self.address.to_le_bytes());
            return;
        }
        match self.target(offset, data.len()) {
            Some((addr, reg)) => lock_bus(&self.bus).read_config(addr, reg, data),
            None => data.fill(0xff),
        }
    }

    /// A port write at 0xCF8 + `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> ConfigWriteOutcome {
        if offset < DATA_PORT {
            if let (0, Ok(bytes)) = (offset, <[u8; 4]>::try_from(data)) {
                self.address = u32::from_le_bytes(bytes) & CONFIG_ADDRESS_MASK;
            }
            return ConfigWriteOutcome::none();
        }
        match self.target(offset, data.len()) {
            Some((addr, reg)) => lock_bus(&self.bus).write_config(addr, reg, data),
            None => ConfigWriteOutcome::none(),
        }
    }
}

/// PCIe ECAM, on the MMIO bus at the ECAM base (1 MiB per bus; only bus 0 is populated).
/// Offsets are relative to the ECAM base.
#[derive(Debug)]
pub struct PciConfigMmio {
    bus: Arc<Mutex<PciBus>>,
}

impl PciConfigMmio {
    /// ECAM dispatching to `bus`.
    pub fn new(bus: Arc<Mutex<PciBus>>) -> Self {
        PciConfigMmio { bus }
    }

    /// An MMIO read at ECAM base + `offset`.
    pub fn read(&mut self, offset: u64, data: &mut [u8]) {
        match decode_ecam(offset) {
            Some((addr, reg)) => lock_bus(&self.bus).read_config(addr, reg, data),
            None => data.fill(0xff),
        }
    }

    /// An MMIO write at ECAM base + `offset`.
    pub fn write(&mut self, offset: u64, data: &[u8]) -> ConfigWriteOutcome {
        match decode_ecam(offset) {
            Some((addr, reg)) => lock_bus(&self.bus).write_config(addr, reg, data),
            None => ConfigWriteOutcome::none(),
        }
    }
}
