//! VFIO passthrough: host checks ([`group`]), the guest-visible device ([`device`]), its BAR
//! mappings ([`bars`]) and its interrupts ([`irq`]).

pub mod bars;
pub mod device;
pub mod group;
pub mod intx;
pub mod irq;

pub use device::{VfioPciDevice, VfioPciError};
pub use group::{check as check_host_device, GroupError, HostDevice};
