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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config_space::{BarSpec, ConfigSpace, PciHeader, BAR0, COMMAND};
    use crate::device::{BarKind, PciDevice};
    use crate::host_bridge::HostBridge;

    /// A device that records the last config access it saw.
    struct Probe {
        config: ConfigSpace,
        last_read: Option<(u16, usize)>,
        last_write: Option<(u16, Vec<u8>)>,
    }

    impl PciDevice for Probe {
        fn read_config(&mut self, offset: u16, data: &mut [u8]) {
            self.last_read = Some((offset, data.len()));
            self.config.read(offset, data);
        }
        fn write_config(&mut self, offset: u16, data: &[u8]) -> ConfigWriteOutcome {
            self.last_write = Some((offset, data.to_vec()));
            self.config.write(offset, data)
        }
    }

    fn probe() -> Arc<Mutex<Probe>> {
        let mut config = ConfigSpace::new(&PciHeader {
            vendor_id: 0x10de,
            device_id: 0x2335,
            class_code: 0x03_02_00,
            ..Default::default()
        });
        config
            .add_bar(
                0,
                BarSpec {
                    kind: BarKind::Mem32,
                    prefetchable: false,
                    size: 0x1000,
                    addr: 0xc000_0000,
                },
            )
            .unwrap();
        Arc::new(Mutex::new(Probe {
            config,
            last_read: None,
            last_write: None,
        }))
    }

    fn setup() -> (Arc<Mutex<PciBus>>, Arc<Mutex<Probe>>) {
        let mut bus = PciBus::new();
        assert_eq!(
            bus.add_device(Arc::new(Mutex::new(HostBridge::new())))
                .unwrap()
                .device,
            0
        );
        let p = probe();
        bus.add_device_at(3, 0, p.clone()).unwrap();
        (Arc::new(Mutex::new(bus)), p)
    }

    fn cf8(bus: u8, dev: u8, func: u8, reg: u8) -> u32 {
        CONFIG_ADDRESS_ENABLE
            | u32::from(bus) << 16
            | u32::from(dev) << 11
            | u32::from(func) << 8
            | u32::from(reg)
    }

    fn io_read(io: &mut PciConfigIo, offset: u64, len: usize) -> u32 {
        let mut b = [0u8; 4];
        io.read(offset, &mut b[..len]);
        u32::from_le_bytes(b)
    }

    #[test]
    fn decode_config_address_fields() {
        assert_eq!(decode_config_address(0x0000_1810), None);
        let (a, reg) = decode_config_address(0x8012_3a7f).unwrap();
        // bus 0x12, device 0b00111 = 7, function 0b010 = 2, register 0x7c.
        assert_eq!((a.bus, a.device, a.function, reg), (0x12, 7, 2, 0x7c));
        let (a, reg) = decode_config_address(cf8(0xff, 31, 7, 0xfc)).unwrap();
        assert_eq!((a.bus, a.device, a.function, reg), (0xff, 31, 7, 0xfc));
        // Reserved bits 30:24 and the extended-register bits are not decoded.
        let (a, reg) = decode_config_address(0xff00_0004).unwrap();
        assert_eq!((a.bus, a.device, a.function, reg), (0, 0, 0, 4));
    }

    #[test]
    fn decode_ecam_fields() {
        let (a, reg) = decode_ecam(0).unwrap();
        assert_eq!((a.bus, a.device, a.function, reg), (0, 0, 0, 0));
        let (a, reg) = decode_ecam(0x0031_a7fc).unwrap();
        // bus 3, device (0x1a7fc >> 15) & 31 = 3, function (>> 12) & 7 = 2, register 0x7fc.
        assert_eq!((a.bus, a.device, a.function, reg), (3, 3, 2, 0x7fc));
        let (a, reg) = decode_ecam((1 << 20) * 255 + (31 << 15) + (7 << 12) + 0xfff).unwrap();
        assert_eq!((a.bus, a.device, a.function, reg), (255, 31, 7, 0xfff));
        assert_eq!(decode_ecam(256 << 20), None);
    }

    #[test]
    fn latch_is_dword_only_and_masked() {
        let (bus, _) = setup();
        let mut io = PciConfigIo::new(bus);
        io.write(0, &cf8(0, 3, 0, 0x10).to_le_bytes());
        assert_eq!(io.config_address(), 0x8000_1810);
        assert_eq!(io_read(&mut io, 0, 4), 0x8000_1810);
        // Byte and word writes to 0xCF8..0xCFB are ignored; so are their reads.
        io.write(0, &[0]);
        io.write(1, &[0xff]);
        io.write(2, &[0, 0]);
        assert_eq!(io.config_address(), 0x8000_1810);
        assert_eq!(io_read(&mut io, 0, 2), 0xffff);
        assert_eq!(io_read(&mut io, 1, 1), 0xff);
        // Low two bits and reserved bits are not kept.
        io.write(0, &0xff00_0013u32.to_le_bytes());
        assert_eq!(io.config_address(), 0x8000_0010);
    }

    #[test]
    fn data_port_sizes_and_offsets() {
        let (bus, p) = setup();
        let mut io = PciConfigIo::new(bus);
        io.write(0, &cf8(0, 3, 0, 0x00).to_le_bytes());
        assert_eq!(io_read(&mut io, 4, 4), 0x2335_10de);
        assert_eq!(io_read(&mut io, 4, 2), 0x10de);
        assert_eq!(io_read(&mut io, 6, 2), 0x2335);
        assert_eq!(io_read(&mut io, 5, 1), 0x10);
        assert_eq!(io_read(&mut io, 7, 1), 0x23);
        assert_eq!(p.lock().unwrap().last_read, Some((3, 1)));
        // Class code through 0xCFD..0xCFF of register 8.
        io.write(0, &cf8(0, 3, 0, 0x08).to_le_bytes());
        assert_eq!(io_read(&mut io, 5, 1), 0x00);
        assert_eq!(io_read(&mut io, 6, 2), 0x0302);
        // Accesses spilling out of the data dword are dropped.
        assert_eq!(io_read(&mut io, 6, 4), 0xffff_ffff);
        // A word write at 0xCFE lands at register + 2.
        io.write(0, &cf8(0, 3, 0, 0x04).to_le_bytes());
        io.write(4, &2u16.to_le_bytes());
        assert_eq!(p.lock().unwrap().last_write, Some((4, vec![2, 0])));
        io.write(6, &0u16.to_le_bytes());
        assert_eq!(p.lock().unwrap().last_write, Some((6, vec![0, 0])));
    }

    #[test]
    fn disabled_latch_and_absent_devices_read_all_ones() {
        let (bus, p) = setup();
        let mut io = PciConfigIo::new(bus.clone());
        io.write(0, &(cf8(0, 3, 0, 0) & !CONFIG_ADDRESS_ENABLE).to_le_bytes());
        assert_eq!(io_read(&mut io, 4, 4), 0xffff_ffff);
        assert!(io.write(4, &[1, 2, 3, 4]).is_empty());
        assert_eq!(p.lock().unwrap().last_read, None);
        assert_eq!(p.lock().unwrap().last_write, None);
        for (b, d, f) in [(0, 1, 0), (0, 3, 1), (1, 0, 0), (0, 31, 7)] {
            io.write(0, &cf8(b, d, f, 0).to_le_bytes());
            assert_eq!(io_read(&mut io, 4, 4), 0xffff_ffff, "{b}:{d}.{f}");
            assert_eq!(io_read(&mut io, 4, 2), 0xffff);
        }
        let mut ecam = PciConfigMmio::new(bus);
        let mut b = [0u8; 4];
        ecam.read(4 << 15, &mut b);
        assert_eq!(b, [0xff; 4]);
        ecam.read(1 << 20, &mut b);
        assert_eq!(b, [0xff; 4]);
        ecam.read(256 << 20, &mut b);
        assert_eq!(b, [0xff; 4]);
    }

    #[test]
    fn host_bridge_through_both_mechanisms() {
        let (bus, _) = setup();
        let mut io = PciConfigIo::new(bus.clone());
        io.write(0, &cf8(0, 0, 0, 0).to_le_bytes());
        assert_eq!(io_read(&mut io, 4, 4), 0x0008_1b36);
        io.write(0, &cf8(0, 0, 0, 8).to_le_bytes());
        assert_eq!(io_read(&mut io, 4, 4) >> 8, 0x06_00_00);
        io.write(0, &cf8(0, 0, 0, 0x0c).to_le_bytes());
        assert_eq!(io_read(&mut io, 6, 1), 0, "header type 0");

        let mut ecam = PciConfigMmio::new(bus);
        let mut b = [0u8; 4];
        ecam.read(0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0008_1b36);
        ecam.read(8, &mut b);
        assert_eq!(u32::from_le_bytes(b) >> 8, 0x06_00_00);
        let mut w = [0u8; 2];
        ecam.read(2, &mut w);
        assert_eq!(u16::from_le_bytes(w), 0x0008);
        // Extended config space of the host bridge: no capabilities.
        ecam.read(0x100, &mut b);
        assert_eq!(b, [0; 4]);
    }

    #[test]
    fn ecam_reaches_extended_registers_and_reports_moves() {
        let (bus, p) = setup();
        let mut ecam = PciConfigMmio::new(bus);
        let base = 3 << 15;
        let mut b = [0u8; 4];
        ecam.read(base + 0x104, &mut b);
        assert_eq!(p.lock().unwrap().last_read, Some((0x104, 4)));
        // Malformed: crossing a dword, odd size.
        ecam.read(base + 0x102, &mut b);
        assert_eq!(b, [0xff; 4]);
        let mut three = [0u8; 3];
        ecam.read(base, &mut three);
        assert_eq!(three, [0xff; 3]);
        // A BAR move comes back through the access mechanism.
        ecam.write(base + u64::from(COMMAND), &[2, 0]);
        let out = ecam.write(base + u64::from(BAR0), &0xc001_0000u32.to_le_bytes());
        assert_eq!(out.bar_moves.len(), 1);
        assert_eq!(out.bar_moves[0].new_addr, 0xc001_0000);
        // The same through 0xCF8/0xCFC.
        let bus2 = setup().0;
        let mut io = PciConfigIo::new(bus2);
        io.write(0, &cf8(0, 3, 0, 0x04).to_le_bytes());
        io.write(4, &[2]);
        io.write(0, &cf8(0, 3, 0, 0x10).to_le_bytes());
        let out = io.write(4, &0xc002_0000u32.to_le_bytes());
        assert_eq!(out.bar_moves[0].old_addr, 0xc000_0000);
        assert_eq!(out.bar_moves[0].new_addr, 0xc002_0000);
    }
}
