//! Fixed guest-physical memory layout of an x86_64 Conduit VM.
//!
//! Low memory holds the boot structures the kernel reads once; the 32-bit hole below 4 GiB
//! holds the PCI 32-bit MMIO window, ECAM and the interrupt controllers; RAM that does not fit
//! below the hole continues at 4 GiB; the 64-bit PCI window sits above the end of RAM.

/// Boot GDT (4 descriptors).
pub const BOOT_GDT_START: u64 = 0x500;
/// Empty boot IDT.
pub const BOOT_IDT_START: u64 = 0x520;
/// Linux `boot_params` ("zero page").
pub const ZERO_PAGE_START: u64 = 0x7000;
/// Top of the boot stack (grows down).
pub const BOOT_STACK_POINTER: u64 = 0x8ff0;
/// PVH `hvm_start_info` and its memory map.
pub const PVH_INFO_START: u64 = 0x6000;
/// Page-table root (PML4); PDPT and PDs follow, one page each.
pub const PML4_START: u64 = 0x9000;
/// Kernel command line.
pub const CMDLINE_START: u64 = 0x20000;
/// Space reserved for the command line.
pub const CMDLINE_MAX_SIZE: u64 = 0x10000;
/// End of usable low RAM (start of the EBDA).
pub const EBDA_START: u64 = 0x9fc00;
/// ACPI tables (RSDP first) live in the BIOS area, where Linux also scans for the RSDP.
pub const ACPI_START: u64 = 0xe0000;
/// End (exclusive) of the BIOS area holding ACPI tables.
pub const ACPI_END: u64 = 0x100000;
/// Where the kernel image is loaded (1 MiB).
pub const HIMEM_START: u64 = 0x100000;

/// Start of the 32-bit hole: no RAM between here and 4 GiB.
pub const MEM_32BIT_GAP_START: u64 = 0xc000_0000;
/// 32-bit PCI MMIO window.
pub const PCI_MMIO32_START: u64 = 0xc000_0000;
/// Size of the 32-bit PCI MMIO window (512 MiB).
pub const PCI_MMIO32_SIZE: u64 = 0x2000_0000;
/// PCI Express enhanced configuration (ECAM), bus 0 only (1 MiB).
pub const PCI_ECAM_START: u64 = 0xe000_0000;
/// Size of ECAM for one bus.
pub const PCI_ECAM_SIZE: u64 = 0x10_0000;
/// IOAPIC MMIO base.
pub const IOAPIC_START: u64 = 0xfec0_0000;
/// Local APIC MMIO base.
pub const APIC_START: u64 = 0xfee0_0000;
/// First address above the 32-bit hole.
pub const RAM_64BIT_START: u64 = 0x1_0000_0000;

/// Legacy I/O ports: ACPI PM1a event block (status + enable, 4 bytes).
pub const PM1A_EVT_PORT: u16 = 0x600;
/// Legacy I/O ports: ACPI PM1a control block (2 bytes).
pub const PM1A_CNT_PORT: u16 = 0x604;
/// ACPI SCI interrupt (ISA IRQ / GSI 9, level, active high).
pub const SCI_IRQ: u32 = 9;
/// COM1 base port and IRQ.
pub const COM1_PORT: u16 = 0x3f8;
/// COM1 interrupt line.
pub const COM1_IRQ: u32 = 4;
/// PCI configuration mechanism #1 ports (0xCF8 address, 0xCFC-0xCFF data).
pub const PCI_CONFIG_IO_PORT: u16 = 0xcf8;
/// PCI I/O window for device I/O BARs.
pub const PCI_IO_START: u16 = 0x1000;
/// Size of the PCI I/O window.
pub const PCI_IO_SIZE: u16 = 0xf000;

/// Page-directory-pointer table of the boot page tables (follows the PML4).
pub const PDPT_START: u64 = PML4_START + 0x1000;
/// First of the four page directories (one per GiB of the identity-mapped 4 GiB).
pub const PD_START: u64 = PDPT_START + 0x1000;
/// Number of 8-byte descriptors in the boot GDT (it ends where the boot IDT begins).
pub const BOOT_GDT_ENTRIES: usize = ((BOOT_IDT_START - BOOT_GDT_START) / 8) as usize;

/// Smallest guest RAM `MemoryLayout::plan` accepts.
pub const MIN_RAM_SIZE: u64 = 64 << 20;
/// The 64-bit PCI window starts on this boundary above the end of RAM.
pub const PCI_MMIO64_ALIGN: u64 = 1 << 30;
/// Smallest 64-bit PCI window `MemoryLayout::plan` accepts.
pub const PCI_MMIO64_MIN_SIZE: u64 = 1 << 30;
/// Top of the guest-physical address space kept out of the 64-bit PCI window (room for
/// VMM-private MMIO that must never collide with a BAR).
pub const PCI_MMIO64_TOP_RESERVE: u64 = 1 << 30;

/// SLP_TYP value of the `\_S5_` object for PM1a and PM1b: the guest powers off by writing
/// `(S5_SLP_TYP << 10) | PM1_CNT_SLP_EN` to the PM1a control register, so the PM device
/// recognises S5 as `(value >> 10) & 7 == S5_SLP_TYP` with `value & PM1_CNT_SLP_EN != 0`.
pub const S5_SLP_TYP: u16 = 5;
/// SLP_EN bit of the PM1 control register.
pub const PM1_CNT_SLP_EN: u16 = 1 << 13;
