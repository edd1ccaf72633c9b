//! The host bridge at 00:00.0.
//!
//! Its id is 1b36:0008, the id allocated (in Red Hat's vendor space) for a generic PCIe host
//! bridge and used by QEMU's q35/virt machines. Linux binds no driver or quirk to it, so the
//! guest treats it as a plain host bridge (class 0x060000). It has no BARs, capabilities or
//! interrupt.

use crate::config_space::{ConfigSpace, PciHeader};
use crate::device::{ConfigWriteOutcome, PciDevice};

/// Vendor ID of the host bridge (Red Hat, Inc.).
pub const HOST_BRIDGE_VENDOR_ID: u16 = 0x1b36;
/// Device ID of the host bridge (generic PCIe host bridge).
pub const HOST_BRIDGE_DEVICE_ID: u16 = 0x0008;
/// Class code: bridge, host bridge, programming interface 0.
pub const HOST_BRIDGE_CLASS: u32 = 0x06_00_00;

/// The emulated host bridge.
#[derive(Debug, Clone)]
pub struct HostBridge {
    config: ConfigSpace,
}

impl HostBridge {
    /// A host bridge with the ids above.
    pub fn new() -> Self {
        HostBridge {
            config: ConfigSpace::new(&PciHeader {
                vendor_id: HOST_BRIDGE_VENDOR_ID,
                device_id: HOST_BRIDGE_DEVICE_ID,
                class_code: HOST_BRIDGE_CLASS,
                ..Default::default()
            }),
        }
    }
}

impl Default for HostBridge {
    fn default() -> Self {
        Self::new()
    }
}

impl PciDevice for HostBridge {
    fn read_config(&mut self, offset: u16, data: &mut [u8]) {
        self.config.read(offset, data);
    }

    fn write_config(&mut self, offset: u16, data: &[u8]) -> ConfigWriteOutcome {
        self.config.write(offset, data)
    }
}
