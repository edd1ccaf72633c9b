//! VFIO passthrough: host checks ([`group`]), the guest-visible device ([`device`]) over the
//! VFIO device operations it needs ([`device_io`]), its BAR mappings ([`bars`]), guest BAR
//! moves ([`bar_guard`]) and the BARs' IOMMU mappings for peer-to-peer DMA ([`p2p`]), its
//! expansion ROM ([`rom`]), its interrupts ([`irq`], [`interrupt_mode`]), resets
//! ([`reset`]) and the wait for guest RAM's IOMMU mapping ([`dma_gate`]). `fake` (tests, and the `fake-vfio` feature for fuzzing) runs it without
//! /dev/vfio.

pub mod bar_guard;
pub mod bars;
pub mod device;
pub mod device_io;
pub mod dma_gate;
#[cfg(any(test, feature = "fake-vfio"))]
pub mod fake;
pub mod group;
pub mod interrupt_mode;
pub mod intx;
pub mod irq;
pub mod p2p;
pub mod reset;
pub mod rom;

pub use device::{DeviceOptions, VfioPciDevice, VfioPciError};
pub use device_io::{IrqInfo, VfioDeviceIo};
pub use dma_gate::DmaGate;
pub use group::{check as check_host_device, GroupError, HostDevice};
pub use p2p::DmaRange;
pub use rom::{RomChoice, RomError, RomImage};
