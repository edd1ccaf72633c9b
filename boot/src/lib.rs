//! Guest boot: memory layout, kernel and initramfs loading, boot parameters, e820 and ACPI.

pub mod layout;
