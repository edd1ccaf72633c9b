//! MADT: local APICs, the IOAPIC, ISA interrupt overrides and the LINT1 NMI.

use acpi_tables::madt::{EnabledStatus, IoApic, ProcessorLocalApic};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{AcpiConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{APIC_START, IOAPIC_START, SCI_IRQ};

/// MADT revision (ACPI 6.x).
const MADT_REVISION: u8 = 5;
/// Length of the MADT header (SDT header + local APIC address + flags).
const MADT_HEADER_LEN: u32 = 44;
/// Flags: PCAT_COMPAT (dual 8259s present; Linux masks them).
const MADT_PCAT_COMPAT: u32 = 1;

/// Interrupt Source Override (type 2) and Local APIC NMI (type 4) structures; the crate
/// only has the APIC ones.
const MADT_TYPE_INT_SRC_OVERRIDE: u8 = 2;
const MADT_TYPE_LAPIC_NMI: u8 = 4;
/// MPS INTI flags.
const INTI_POLARITY_HIGH: u16 = 0b01;
const INTI_TRIGGER_EDGE: u16 = 0b01 << 2;
const INTI_TRIGGER_LEVEL: u16 = 0b11 << 2;
/// ACPI processor UID meaning "all processors".
const ALL_PROCESSORS: u8 = 0xff;

/// IRQ0 (PIT) is wired to IOAPIC pin 2: edge, active high.
const IRQ0_GSI: u32 = 2;

fn interrupt_source_override(irq: u8, gsi: u32, flags: u16) -> Vec<u8> {
    let mut s = vec![MADT_TYPE_INT_SRC_OVERRIDE, 10, 0 /* ISA bus */, irq];
    s.extend_from_slice(&gsi.to_le_bytes());
    s.extend_from_slice(&flags.to_le_bytes());
    s
}

fn lapic_nmi(lint: u8, flags: u16) -> Vec<u8> {
    let mut s = vec![MADT_TYPE_LAPIC_NMI, 6, ALL_PROCESSORS];
    s.extend_from_slice(&flags.to_le_bytes());
    s.push(lint);
    s
}

/// IOAPIC id: the first id after the CPUs' APIC ids.
pub(super) fn ioapic_id(cfg: &AcpiConfig) -> u8 {
    cfg.num_cpus as u8
}

/// Builds the complete MADT (header included, checksum set). `cfg.num_cpus` is validated
/// (1..=254) by the caller.
pub(super) fn build(cfg: &AcpiConfig) -> Vec<u8> {
    let mut madt = Sdt::new(
        *b"APIC",
        MADT_HEADER_LEN,
        MADT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    madt.write_u32(36, APIC_START as u32);
    madt.write_u32(40, MADT_PCAT_COMPAT);
    let mut append = |aml: &dyn Aml| {
        let mut bytes = Vec::new();
        aml.to_aml_bytes(&mut bytes);
        madt.append_slice(&bytes);
    };
    for cpu in 0..cfg.num_cpus as u8 {
        // Processor UID = APIC id = vCPU index.
        append(&ProcessorLocalApic::new(cpu, cpu, EnabledStatus::Enabled));
    }
    append(&IoApic::new(ioapic_id(cfg), IOAPIC_START as u32, 0));
    madt.append_slice(&interrupt_source_override(
        0,
        IRQ0_GSI,
        INTI_POLARITY_HIGH | INTI_TRIGGER_EDGE,
    ));
    madt.append_slice(&interrupt_source_override(
        SCI_IRQ as u8,
        SCI_IRQ,
        INTI_POLARITY_HIGH | INTI_TRIGGER_LEVEL,
    ));
    madt.append_slice(&lapic_nmi(1, INTI_POLARITY_HIGH | INTI_TRIGGER_EDGE));
    madt.as_slice().to_vec()
}
