//! ACPI tables (built with the `acpi_tables` crate) in the BIOS area from `ACPI_START`:
//! RSDP (rev 2) → XSDT → {FADT, MADT, MCFG}; FADT → DSDT and FACS.

mod dsdt;
mod fadt;
mod madt;

use acpi_tables::facs::FACS;
use acpi_tables::fadt::FADT;
use acpi_tables::mcfg::MCFG;
use acpi_tables::rsdp::Rsdp;
use acpi_tables::xsdt::XSDT;
use acpi_tables::Aml;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::layout::{ACPI_END, ACPI_START, PCI_CONFIG_IO_PORT};
use crate::memory::{MemoryLayout, Window};

/// OEM identification in every table header.
const OEM_ID: [u8; 6] = *b"CNDUIT";
const OEM_TABLE_ID: [u8; 8] = *b"CONDUIT ";
const OEM_REVISION: u32 = 1;

/// Tables the XSDT lists.
const XSDT_ENTRIES: usize = 3;
const SDT_HEADER_LEN: usize = 36;
/// Alignment of tables (FACS needs 64).
const TABLE_ALIGN: u64 = 16;
const FACS_ALIGN: u64 = 64;
/// Largest vCPU count: xAPIC ids are 8-bit, 0xff is broadcast, and the IOAPIC takes the
/// id after the last CPU.
pub const MAX_CPUS: u32 = 254;

/// Errors of building the ACPI tables.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A configuration value the tables cannot describe.
    #[error("ACPI configuration: invalid {what}: {detail}")]
    InvalidConfig {
        /// Which setting.
        what: &'static str,
        /// Why.
        detail: String,
    },
    /// The tables outgrow the BIOS area.
    #[error("ACPI tables end at {end:#x}, beyond the {limit:#x} limit of the BIOS area")]
    TooLarge {
        /// Where they would end.
        end: u64,
        /// Where they must end.
        limit: u64,
    },
    /// Guest memory write failed.
    #[error("cannot write ACPI table {table} at {addr:#x}: {source}")]
    Memory {
        /// Table signature.
        table: &'static str,
        /// Where.
        addr: u64,
        /// Underlying error.
        source: vm_memory::GuestMemoryError,
    },
}

/// The ECAM region as MCFG and the host bridge describe it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct EcamConfig {
    /// Base address (of bus 0, segment 0).
    pub base: u64,
    /// Size in bytes (1 MiB per bus).
    pub size: u64,
    /// First bus decoded.
    pub start_bus: u8,
    /// Last bus decoded.
    pub end_bus: u8,
}

/// What the ACPI tables describe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AcpiConfig {
    /// vCPUs (APIC id = processor UID = index), 1..=`MAX_CPUS`.
    pub num_cpus: u32,
    /// ECAM.
    pub ecam: EcamConfig,
    /// PCI I/O port window for device I/O BARs (ports, must lie in 0xD00..=0xFFFF).
    pub pci_io: Window,
    /// 32-bit PCI memory window (below 4 GiB).
    pub mmio32: Window,
    /// 64-bit PCI memory window.
    pub mmio64: Window,
    /// Declare an i8042 at 0x60/0x64 (FADT IAPC_BOOT_ARCH 8042 flag). Only Linux's i8042
    /// driver reads the flag: when set, it probes the controller directly (there is no PNP
    /// entry), which costs ~3 s of boot against an i8042 that only implements the reset
    /// line. Reboot through 0xFE → port 0x64 does not depend on it.
    pub i8042: bool,
    /// A CMOS RTC answers at 0x70/0x71; when false the FADT says "no CMOS RTC" and Linux
    /// leaves the ports alone.
    pub cmos_rtc: bool,
    /// When set, a `_PRT` routes INTA..INTD of PCI slot `s` pin `p` to GSI
    /// `gsis[(s + p) % 4]` (level-triggered, active low, as PCI INTx are); when `None` there
    /// is no `_PRT` and devices must use MSI/MSI-X.
    pub pci_intx_gsis: Option<[u32; 4]>,
}

/// IOAPIC pins that PCI INTx lines are routed to (swizzled by slot), above the ISA IRQs.
pub const PCI_INTX_GSIS: [u32; 4] = [16, 17, 18, 19];

/// GSI of interrupt pin `pin` (1 = INTA .. 4 = INTD) of the device in PCI slot `slot`,
/// as the `_PRT` declares it.
pub fn pci_intx_gsi(slot: u8, pin: u8) -> Option<u32> {
    (1..=4)
        .contains(&pin)
        .then(|| PCI_INTX_GSIS[(usize::from(slot) + usize::from(pin) - 1) % 4])
}

impl AcpiConfig {
    /// Configuration for `num_cpus` vCPUs and the windows of `layout`: CMOS RTC present,
    /// i8042 not declared (see [`AcpiConfig::i8042`]), PCI INTx routed by a `_PRT` to
    /// [`PCI_INTX_GSIS`].
    pub fn new(num_cpus: u32, layout: &MemoryLayout) -> Self {
        let ecam = layout.ecam();
        AcpiConfig {
            num_cpus,
            ecam: EcamConfig {
                base: ecam.base,
                size: ecam.size,
                start_bus: 0,
                end_bus: layout.ecam_end_bus(),
            },
            pci_io: Window {
                base: u64::from(crate::layout::PCI_IO_START),
                size: u64::from(crate::layout::PCI_IO_SIZE),
            },
            mmio32: layout.mmio32_window(),
            mmio64: layout.mmio64_window(),
            i8042: false,
            cmos_rtc: true,
            pci_intx_gsis: Some(PCI_INTX_GSIS),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |what, detail: String| Err(Error::InvalidConfig { what, detail });
        if !(1..=MAX_CPUS).contains(&self.num_cpus) {
            return invalid(
                "CPU count",
                format!("{} (must be 1 to {MAX_CPUS})", self.num_cpus),
            );
        }
        let e = self.ecam;
        let buses = u64::from(e.end_bus.saturating_sub(e.start_bus)) + 1;
        if e.end_bus < e.start_bus || e.size < buses << 20 || !e.base.is_multiple_of(1 << 20) {
            return invalid(
                "ECAM",
                format!(
                    "base {:#x} size {:#x} does not cover buses {}..={} at 1 MiB per bus",
                    e.base, e.size, e.start_bus, e.end_bus
                ),
            );
        }
        let io = self.pci_io;
        if io.size == 0 || io.base <= u64::from(PCI_CONFIG_IO_PORT) + 7 || io.end() > 0x1_0000 {
            return invalid(
                "PCI I/O window",
                format!(
                    "ports {:#x}+{:#x} must be non-empty and within 0xd00..=0xffff",
                    io.base, io.size
                ),
            );
        }
        if self.mmio32.size == 0 || self.mmio32.end() > 1 << 32 {
            return invalid(
                "32-bit PCI window",
                format!("{:#x}+{:#x}", self.mmio32.base, self.mmio32.size),
            );
        }
        if self.mmio64.size == 0 || self.mmio64.base.checked_add(self.mmio64.size).is_none() {
            return invalid(
                "64-bit PCI window",
                format!("{:#x}+{:#x}", self.mmio64.base, self.mmio64.size),
            );
        }
        Ok(())
    }
}

/// Hands out addresses for tables one after another.
struct Placer {
    next: u64,
}

impl Placer {
    fn place(&mut self, len: usize, align: u64) -> u64 {
        let at = self.next.next_multiple_of(align);
        self.next = at + len as u64;
        at
    }
}

fn to_bytes(aml: &dyn Aml) -> Vec<u8> {
    let mut bytes = Vec::new();
    aml.to_aml_bytes(&mut bytes);
    bytes
}

/// Builds and writes all ACPI tables; returns the RSDP address (`ACPI_START`).
pub fn write_tables<M: GuestMemoryBackend>(
    mem: &M,
    cfg: &AcpiConfig,
) -> Result<GuestAddress, Error> {
    cfg.validate()?;
    let dsdt = dsdt::build(cfg);
    let madt = madt::build(cfg);
    let mut mcfg = MCFG::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    mcfg.add_ecam(cfg.ecam.base, 0, cfg.ecam.start_bus, cfg.ecam.end_bus);
    let mcfg = to_bytes(&mcfg);
    let facs = to_bytes(&FACS::new());

    let mut placer = Placer { next: ACPI_START };
    let rsdp_at = placer.place(Rsdp::len(), TABLE_ALIGN);
    let xsdt_at = placer.place(SDT_HEADER_LEN + 8 * XSDT_ENTRIES, TABLE_ALIGN);
    let fadt_at = placer.place(FADT::len(), TABLE_ALIGN);
    let facs_at = placer.place(facs.len(), FACS_ALIGN);
    let dsdt_at = placer.place(dsdt.len(), TABLE_ALIGN);
    let madt_at = placer.place(madt.len(), TABLE_ALIGN);
    let mcfg_at = placer.place(mcfg.len(), TABLE_ALIGN);
    if placer.next > ACPI_END {
        return Err(Error::TooLarge {
            end: placer.next,
            limit: ACPI_END,
        });
    }

    let fadt = fadt::build(cfg, dsdt_at, facs_at);
    let mut xsdt = XSDT::new(OEM_ID, OEM_TABLE_ID, OEM_REVISION);
    for table in [fadt_at, madt_at, mcfg_at] {
        xsdt.add_entry(table);
    }
    let xsdt = to_bytes(&xsdt);
    let rsdp = to_bytes(&Rsdp::new(OEM_ID, xsdt_at));
    debug_assert_eq!(xsdt.len(), SDT_HEADER_LEN + 8 * XSDT_ENTRIES);

    for (table, addr, bytes) in [
        ("RSDP", rsdp_at, &rsdp),
        ("XSDT", xsdt_at, &xsdt),
        ("FACP", fadt_at, &fadt),
        ("FACS", facs_at, &facs),
        ("DSDT", dsdt_at, &dsdt),
        ("APIC", madt_at, &madt),
        ("MCFG", mcfg_at, &mcfg),
    ] {
        mem.write_slice(bytes, GuestAddress(addr))
            .map_err(|source| Error::Memory {
                table,
                addr,
                source,
            })?;
    }
    Ok(GuestAddress(rsdp_at))
}

#[cfg(test)]
mod tests;
