//! PCI bus 0: devices by device/function number, config accesses dispatched to them.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::{Arc, Mutex, MutexGuard};

use log::warn;

use crate::device::{ConfigWriteOutcome, PciDevice};
use crate::error::Error;

/// A device shared between the PCI bus (config accesses) and the VMM's MMIO/PIO buses
/// (BAR accesses).
pub type SharedPciDevice = Arc<Mutex<dyn PciDevice>>;

/// Highest device number.
pub const MAX_DEVICE: u8 = 31;
/// Highest function number.
pub const MAX_FUNCTION: u8 = 7;

/// A bus/device/function address.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PciAddress {
    /// Bus number.
    pub bus: u8,
    /// Device number 0..=31.
    pub device: u8,
    /// Function number 0..=7.
    pub function: u8,
}

impl PciAddress {
    /// Checks the device and function numbers.
    pub fn new(bus: u8, device: u8, function: u8) -> Result<Self, Error> {
        if device > MAX_DEVICE || function > MAX_FUNCTION {
            return Err(Error::InvalidSlot { device, function });
        }
        Ok(PciAddress {
            bus,
            device,
            function,
        })
    }
}

impl fmt::Display for PciAddress {
    /// `bb:dd.f`, as lspci prints it (segment 0 implied).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:02x}:{:02x}.{}", self.bus, self.device, self.function)
    }
}

/// Bus 0 and its devices. Accesses to absent functions (or other buses) read all-ones and
/// writes to them are dropped.
#[derive(Default)]
pub struct PciBus {
    slots: BTreeMap<(u8, u8), SharedPciDevice>,
}

impl fmt::Debug for PciBus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list()
            .entries(self.addresses().map(|a| a.to_string()))
            .finish()
    }
}

/// Locks a device; a poisoned lock (a panic elsewhere) still gives access, with a warning,
/// so one faulty device does not take config space down.
fn lock(dev: &SharedPciDevice) -> MutexGuard<'_, dyn PciDevice + 'static> {
    dev.lock().unwrap_or_else(|poisoned| {
        warn!("PCI device lock poisoned; continuing");
        poisoned.into_inner()
    })
}

/// The access is 1, 2 or 4 bytes and stays within one dword of config space.
fn valid_access(offset: u16, len: usize) -> bool {
    matches!(len, 1 | 2 | 4) && usize::from(offset % 4) + len <= 4 && offset < 4096
}

impl PciBus {
    /// An empty bus 0.
    pub fn new() -> Self {
        Self::default()
    }

    /// Puts `dev` at function 0 of the lowest free device number.
    pub fn add_device(&mut self, dev: SharedPciDevice) -> Result<PciAddress, Error> {
        let device = (0..=MAX_DEVICE)
            .find(|d| !self.slots.range((*d, 0)..=(*d, MAX_FUNCTION)).any(|_| true))
            .ok_or(Error::BusFull)?;
        self.add_device_at(device, 0, dev)
    }

    /// Puts `dev` at `device.function`. A function other than 0 is seen by the guest only if
    /// function 0 reports itself multi-function.
    pub fn add_device_at(
        &mut self,
        device: u8,
        function: u8,
        dev: SharedPciDevice,
    ) -> Result<PciAddress, Error> {
        let addr = PciAddress::new(0, device, function)?;
        if self.slots.contains_key(&(device, function)) {
            return Err(Error::SlotInUse { device, function });
        }
        self.slots.insert((device, function), dev);
        Ok(addr)
    }

    /// Takes the device at `addr` off the bus.
    pub fn remove_device(&mut self, addr: PciAddress) -> Option<SharedPciDevice> {
        if addr.bus != 0 {
            return None;
        }
        self.slots.remove(&(addr.device, addr.function))
    }

    /// The device at `addr`.
    pub fn device(&self, addr: PciAddress) -> Option<&SharedPciDevice> {
        if addr.bus != 0 {
            return None;
        }
        self.slots.get(&(addr.device, addr.function))
    }

    /// Addresses in use, in order.
    pub fn addresses(&self) -> impl Iterator<Item = PciAddress> + '_ {
        self.slots.keys().map(|&(device, function)| PciAddress {
            bus: 0,
            device,
            function,
        })
    }

    /// Devices and their addresses, in address order.
    pub fn devices(&self) -> impl Iterator<Item = (PciAddress, &SharedPciDevice)> {
        self.slots.iter().map(|(&(device, function), dev)| {
            (
                PciAddress {
                    bus: 0,
                    device,
                    function,
                },
                dev,
            )
        })
    }

    /// Reads config register `offset` of `addr` (1, 2 or 4 bytes within one dword);
    /// all-ones for absent functions and malformed accesses.
    pub fn read_config(&self, addr: PciAddress, offset: u16, data: &mut [u8]) {
        if !valid_access(offset, data.len()) {
            warn!(
                "config read of {} bytes at {addr} {offset:#x} ignored",
                data.len()
            );
            data.fill(0xff);
            return;
        }
        match self.device(addr) {
            Some(dev) => lock(dev).read_config(offset, data),
            None => data.fill(0xff),
        }
    }

    /// Writes config register `offset` of `addr`; dropped for absent functions and
    /// malformed accesses.
    pub fn write_config(&self, addr: PciAddress, offset: u16, data: &[u8]) -> ConfigWriteOutcome {
        if !valid_access(offset, data.len()) {
            warn!(
                "config write of {} bytes at {addr} {offset:#x} ignored",
                data.len()
            );
            return ConfigWriteOutcome::none();
        }
        match self.device(addr) {
            Some(dev) => lock(dev).write_config(offset, data),
            None => ConfigWriteOutcome::none(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host_bridge::HostBridge;

    fn bridge() -> SharedPciDevice {
        Arc::new(Mutex::new(HostBridge::new()))
    }

    #[test]
    fn slots_fill_in_order_and_clash() {
        let mut bus = PciBus::new();
        assert_eq!(bus.add_device(bridge()).unwrap().to_string(), "00:00.0");
        bus.add_device_at(1, 0, bridge()).unwrap();
        bus.add_device_at(2, 3, bridge()).unwrap();
        // Device 2 has a function in use, so the next free device is 3.
        assert_eq!(bus.add_device(bridge()).unwrap().device, 3);
        assert_eq!(
            bus.add_device_at(1, 0, bridge()).unwrap_err(),
            Error::SlotInUse {
                device: 1,
                function: 0
            }
        );
        assert_eq!(
            bus.add_device_at(32, 0, bridge()).unwrap_err(),
            Error::InvalidSlot {
                device: 32,
                function: 0
            }
        );
        assert!(bus.add_device_at(0, 8, bridge()).is_err());
        let addrs: Vec<String> = bus.addresses().map(|a| a.to_string()).collect();
        assert_eq!(addrs, ["00:00.0", "00:01.0", "00:02.3", "00:03.0"]);
        assert_eq!(bus.devices().count(), 4);
    }

    #[test]
    fn bus_fills_up() {
        let mut bus = PciBus::new();
        for d in 0..32 {
            assert_eq!(bus.add_device(bridge()).unwrap().device, d);
        }
        assert_eq!(bus.add_device(bridge()).unwrap_err(), Error::BusFull);
        let gone = PciAddress::new(0, 7, 0).unwrap();
        assert!(bus.remove_device(gone).is_some());
        assert!(bus.device(gone).is_none());
        assert_eq!(bus.add_device(bridge()).unwrap(), gone);
    }

    #[test]
    fn dispatch_and_absent_functions() {
        let mut bus = PciBus::new();
        bus.add_device(bridge()).unwrap();
        let here = PciAddress::new(0, 0, 0).unwrap();
        let mut b = [0u8; 4];
        bus.read_config(here, 0, &mut b);
        assert_eq!(u32::from_le_bytes(b), 0x0008_1b36);
        for absent in [
            PciAddress::new(0, 1, 0).unwrap(),
            PciAddress::new(0, 0, 1).unwrap(),
            PciAddress::new(5, 0, 0).unwrap(),
        ] {
            bus.read_config(absent, 0, &mut b);
            assert_eq!(b, [0xff; 4]);
            assert!(bus.write_config(absent, 4, &[7, 0]).is_empty());
        }
        // Writes reach the device.
        bus.write_config(here, 0x3c, &[0x0a]);
        let mut l = [0u8; 1];
        bus.read_config(here, 0x3c, &mut l);
        assert_eq!(l[0], 0x0a);
        // Malformed accesses are refused before the device.
        bus.read_config(here, 3, &mut b[..2]);
        assert_eq!(&b[..2], &[0xff, 0xff]);
        bus.read_config(here, 0x1000, &mut l);
        assert_eq!(l[0], 0xff);
    }

    #[test]
    fn poisoned_device_still_answers() {
        let dev = bridge();
        let mut bus = PciBus::new();
        bus.add_device(dev.clone()).unwrap();
        let _ = std::thread::spawn(move || {
            let _g = dev.lock().unwrap();
            panic!("device thread dies holding the lock");
        })
        .join();
        let mut b = [0u8; 2];
        bus.read_config(PciAddress::new(0, 0, 0).unwrap(), 0, &mut b);
        assert_eq!(u16::from_le_bytes(b), 0x1b36);
    }
}
