//! VFIO passthrough: host checks ([`group`]), the guest-visible device ([`device`]), its BAR
//! mappings ([`bars`]) and their IOMMU mappings for peer-to-peer DMA ([`p2p`]), its
//! expansion ROM ([`rom`]) and its interrupts ([`irq`]).

pub mod bars;
pub mod device;
pub mod group;
pub mod intx;
pub mod irq;
pub mod p2p;
pub mod rom;

pub use device::{DeviceOptions, VfioPciDevice, VfioPciError};
pub use group::{check as check_host_device, GroupError, HostDevice};
pub use p2p::DmaRange;
pub use rom::{RomChoice, RomError, RomImage};
