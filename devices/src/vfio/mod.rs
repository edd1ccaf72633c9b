//! VFIO passthrough: host checks ([`group`]), the guest-visible device ([`device`]), its BAR
//! mappings ([`bars`]), guest BAR moves ([`bar_guard`]) and its interrupts ([`irq`],
//! [`interrupt_mode`]).

pub mod bar_guard;
pub mod bars;
pub mod device;
pub mod group;
pub mod interrupt_mode;
pub mod intx;
pub mod irq;
pub mod reset;

pub use device::{VfioPciDevice, VfioPciError};
pub use group::{check as check_host_device, GroupError, HostDevice};
