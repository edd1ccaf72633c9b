//! Guest boot: memory layout, kernel and initramfs loading, boot parameters, e820 and ACPI.

pub mod e820;
pub mod layout;
pub mod memory;

pub use memory::MemoryLayout;
