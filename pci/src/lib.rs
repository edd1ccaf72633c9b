//! PCI for Conduit: config space emulation, bus 0, the two config access mechanisms, the host
//! bridge, MSI/MSI-X emulation, and read-only decoding of host config spaces.
//!
//! The crate knows nothing of KVM or VFIO: interrupt routing goes through the [`MsiRoutes`]
//! trait, which the `vmm` crate implements with irqfds and `KVM_SET_GSI_ROUTING`; BAR moves
//! are returned as data ([`ConfigWriteOutcome`]) for the vmm to apply to its buses and
//! memslots.
//!
//! # Public API
//!
//! **Config access** ([`config_access`]) — decode and dispatch only:
//! - [`PciConfigIo::new`]`(Arc<Mutex<PciBus>>)`; `read(&mut self, offset: u64, data: &mut [u8])`,
//!   `write(&mut self, offset: u64, data: &[u8]) -> ConfigWriteOutcome`, offsets from 0xCF8,
//!   length [`PCI_CONFIG_IO_LEN`] (8 ports). Dword accesses at offset 0 hit the address latch
//!   (other accesses to 0..4 are ignored / read all-ones); offsets 4..8 are the data port.
//! - [`PciConfigMmio::new`]`(Arc<Mutex<PciBus>>)`; same `read`/`write`, offsets from the ECAM
//!   base (1 MiB per bus, [`ECAM_BUS_SIZE`]).
//! - [`decode_config_address`]`(u32) -> Option<(PciAddress, u16)>`,
//!   [`decode_ecam`]`(u64) -> Option<(PciAddress, u16)>`.
//!
//! **Bus** ([`bus`]): [`PciBus::new`], `add_device(SharedPciDevice) -> Result<PciAddress>`
//! (lowest free device number, function 0), `add_device_at(device, function, dev)`,
//! `remove_device`, `device`, `devices()`, `read_config(PciAddress, offset: u16, &mut [u8])`,
//! `write_config(PciAddress, offset: u16, &[u8]) -> ConfigWriteOutcome`. Absent functions read
//! all-ones. [`SharedPciDevice`] = `Arc<Mutex<dyn PciDevice>>`.
//!
//! **Devices** ([`device`]): the [`PciDevice`] trait (`Send`):
//! ```text
//! fn read_config(&mut self, offset: u16, data: &mut [u8]);
//! fn write_config(&mut self, offset: u16, data: &[u8]) -> ConfigWriteOutcome;
//! fn bars(&self) -> Vec<BarRegion>;                         // default: none
//! fn bar_read(&mut self, bar: u8, offset: u64, data: &mut [u8]); // default: all-ones
//! fn bar_write(&mut self, bar: u8, offset: u64, data: &[u8]);    // default: ignored
//! ```
//! [`ConfigWriteOutcome`]` { bar_moves: Vec<BarMove> }`;
//! [`BarMove`]` { index, kind, old_addr, new_addr, size }`;
//! [`BarRegion`]` { index, kind, prefetchable, addr, size }`; [`BarKind`]` { Io, Mem32, Mem64 }`;
//! the expansion ROM is BAR index [`ROM_BAR_INDEX`] (6).
//!
//! **Config space** ([`config_space`]): [`ConfigSpace::new`]`(&PciHeader)`, `read`, `write`
//! (guest side, masks applied, moves reported), `add_bar(index, BarSpec)`, `add_rom(size,
//! addr)`, `bars()`, `bar_address(index)`, `bar_of_register(offset)`, `command()` and its
//! bit getters, `add_capability(id, body) -> u8`, `add_extended_capability(id, version, body)
//! -> u16`, `set_writable`, `set_rw1c`, `set_status_bits`, device-side `read_u*`/`set_u*`.
//!
//! **Host bridge** ([`host_bridge`]): [`HostBridge::new`] — 1b36:0008, class 0x060000.
//!
//! **Interrupts** ([`interrupt`], [`msi`], [`msix`]): the [`MsiRoutes`] trait
//! ```text
//! fn disable(&mut self, vectors: &[u16]) -> Result<(), RouteError>;  // 1. drop irqfds
//! fn set_routes(&mut self, routes: &[VectorRoute]) -> Result<(), RouteError>;
//!                                          // 2. all armed vectors, one routing commit
//! fn enable(&mut self, vectors: &[u16]) -> Result<(), RouteError>;   // 3. add irqfds
//! fn trigger(&mut self, vector: u16) -> Result<(), RouteError>;      // 4. pending: fire once
//! ```
//! called in that order (see [`interrupt`]). [`MsixConfig`] (`new(cap_offset, MsixLayout)`,
//! `add_to(&mut ConfigSpace, MsixLayout)`, `read_config`/`write_config` overlaying the control
//! word, `read_table`/`write_table`, `read_pba`, `request_interrupt`) and [`MsiConfig`]
//! (`new(cap_offset, MsiLayout)`, `add_to`, `read_config`/`write_config` over the whole
//! capability, `request_interrupt`).
//!
//! **Host config decoding** ([`capabilities`](mod@capabilities), [`resource`], [`sparse`]):
//! [`capabilities()`](fn@capabilities)`(&[u8]) -> Vec<Capability>`,
//! [`extended_capabilities`]`(&[u8]) -> Vec<ExtCapability>`, [`find_capability`],
//! [`find_extended_capability`],
//! [`bar_info`]`(low, high) -> BarInfo`, [`decode_bars`], [`MsixLayout::from_capability`],
//! [`MsiLayout::from_capability`], [`parse_sysfs_resource`],
//! [`sparse_areas`]`(bar_size, traps: &[Range<u64>], page_size) -> Result<Vec<Range<u64>>>`.
//!
//! Errors: one [`Error`] enum for setup failures; guest mistakes are logged and ignored.

pub mod bus;
pub mod capabilities;
pub mod config_access;
pub mod config_space;
pub mod device;
pub mod error;
pub mod host_bridge;
pub mod interrupt;
pub mod msi;
pub mod msix;
pub mod resource;
pub mod sparse;

#[cfg(test)]
mod h200_tests;

#[cfg(test)]
mod emulated_tests;

pub use bus::{PciAddress, PciBus, SharedPciDevice};
pub use capabilities::{
    bar_info, capabilities, decode_bars, extended_capabilities, find_capability,
    find_extended_capability, BarInfo, Capability, ExtCapability,
};
pub use config_access::{
    decode_config_address, decode_ecam, PciConfigIo, PciConfigMmio, ECAM_BUS_SIZE,
    PCI_CONFIG_IO_LEN,
};
pub use config_space::{BarSpec, ConfigSpace, PciHeader, CONFIG_SPACE_SIZE};
pub use device::{BarKind, BarMove, BarRegion, ConfigWriteOutcome, PciDevice, ROM_BAR_INDEX};
pub use error::Error;
pub use host_bridge::HostBridge;
pub use interrupt::{MsiMessage, MsiRoutes, RouteError, VectorRoute};
pub use msi::{MsiConfig, MsiLayout};
pub use msix::{MsixConfig, MsixEntry, MsixLayout};
pub use resource::{parse_sysfs_resource, HostResource};
pub use sparse::sparse_areas;
