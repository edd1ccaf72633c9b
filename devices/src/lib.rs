//! Conduit's devices: the range-keyed I/O buses the vCPUs dispatch exits to, and the legacy
//! platform devices a PC guest expects (COM1, i8042 reset line, CMOS RTC, ACPI PM registers).

pub mod acpi_pm;
pub mod bus;
pub mod i8042;
pub mod rtc;
pub mod serial;
pub mod trigger;
pub mod vfio;
pub mod vm_hooks;

pub use bus::{Bus, BusDevice, BusError};
pub use trigger::EventFdTrigger;
