//! DSDT: the PCI host bridge with its resource windows, ECAM as a motherboard resource,
//! COM1, and the S5 sleep state.

use acpi_tables::aml::{
    AddressSpace, AddressSpaceCacheable, Device, EISAName, Interrupt, Memory32Fixed, Name, Package,
    PackageBuilder, ResourceTemplate, Scope, IO, ZERO,
};
use acpi_tables::sdt::Sdt;
use acpi_tables::Aml;

use super::{AcpiConfig, OEM_ID, OEM_REVISION, OEM_TABLE_ID};
use crate::layout::{COM1_IRQ, COM1_PORT, PCI_CONFIG_IO_PORT, S5_SLP_TYP};

/// DSDT revision 2: AML integers are 64-bit (needed for the 64-bit window).
const DSDT_REVISION: u8 = 2;
/// I/O ports below the config ports that the bridge forwards (legacy ISA and ACPI PM ports).
const LEGACY_IO_LAST: u16 = PCI_CONFIG_IO_PORT - 1;
/// PCI slots that get `_PRT` entries (slot 0 is the host bridge).
const PRT_SLOTS: std::ops::Range<u32> = 1..32;

/// The PCI host bridge `_CRS`: bus range, config ports, I/O and memory windows.
fn host_bridge_crs(cfg: &AcpiConfig) -> Vec<u8> {
    let bus = AddressSpace::<u16>::new_bus_number(
        u16::from(cfg.ecam.start_bus),
        u16::from(cfg.ecam.end_bus),
    );
    let config_ports = IO::new(PCI_CONFIG_IO_PORT, PCI_CONFIG_IO_PORT, 1, 8);
    let legacy_io = AddressSpace::<u16>::new_io(0, LEGACY_IO_LAST, None);
    let pci_io =
        AddressSpace::<u16>::new_io(cfg.pci_io.base as u16, cfg.pci_io.last() as u16, None);
    let mmio32 = AddressSpace::<u32>::new_memory(
        AddressSpaceCacheable::NotCacheable,
        true,
        cfg.mmio32.base as u32,
        cfg.mmio32.last() as u32,
        None,
    );
    // Cacheable, not prefetchable: Linux refuses to claim a non-prefetchable BAR inside a
    // prefetchable root window, and 64-bit non-prefetchable BARs exist.
    let mmio64 = AddressSpace::<u64>::new_memory(
        AddressSpaceCacheable::Cacheable,
        true,
        cfg.mmio64.base,
        cfg.mmio64.last(),
        None,
    );
    let mut crs = Vec::new();
    ResourceTemplate::new(vec![
        &bus,
        &config_ports,
        &legacy_io,
        &pci_io,
        &mmio32,
        &mmio64,
    ])
    .to_aml_bytes(&mut crs);
    crs
}

/// `_PRT` routing INTA-D of every slot to `gsis` with the usual swizzle.
fn pci_routing_table(gsis: [u32; 4]) -> PackageBuilder {
    let mut prt = PackageBuilder::new();
    for slot in PRT_SLOTS {
        for pin in 0..4u8 {
            let adr = (slot << 16) | 0xffff;
            let gsi = gsis[(slot as usize + usize::from(pin)) % 4];
            prt.add_element(&Package::new(vec![&adr, &pin, &ZERO, &gsi]));
        }
    }
    prt
}

/// Raw AML wrapper so pre-serialised pieces can sit in an AML tree.
struct Raw(Vec<u8>);

impl Aml for Raw {
    fn to_aml_bytes(&self, sink: &mut dyn acpi_tables::AmlSink) {
        sink.vec(&self.0);
    }
}

/// Builds the complete DSDT (header included, checksum set).
pub(super) fn build(cfg: &AcpiConfig) -> Vec<u8> {
    // \_SB.PCI0: PCI Express host bridge.
    let hid = Name::new("_HID".into(), &EISAName::new("PNP0A08"));
    let cid = Name::new("_CID".into(), &EISAName::new("PNP0A03"));
    let uid = Name::new("_UID".into(), &ZERO);
    let seg = Name::new("_SEG".into(), &ZERO);
    let bbn = Name::new("_BBN".into(), &cfg.ecam.start_bus);
    let adr = Name::new("_ADR".into(), &ZERO);
    let crs = Name::new("_CRS".into(), &Raw(host_bridge_crs(cfg)));
    let prt = cfg
        .pci_intx_gsis
        .map(|gsis| Name::new("_PRT".into(), &pci_routing_table(gsis)));
    let mut pci0_children: Vec<&dyn Aml> = vec![&hid, &cid, &uid, &seg, &bbn, &adr, &crs];
    if let Some(prt) = &prt {
        pci0_children.push(prt);
    }
    let pci0 = Device::new("PCI0".into(), pci0_children);

    // \_SB.ECAM: motherboard resource reserving ECAM (Linux checks MMCONFIG against it).
    let ecam_hid = Name::new("_HID".into(), &EISAName::new("PNP0C02"));
    let ecam_uid = Name::new("_UID".into(), &ZERO);
    let ecam_mem32;
    let ecam_mem64;
    let ecam_range: &dyn Aml = if cfg.ecam.base + cfg.ecam.size <= 1 << 32 {
        ecam_mem32 = Memory32Fixed::new(true, cfg.ecam.base as u32, cfg.ecam.size as u32);
        &ecam_mem32
    } else {
        ecam_mem64 = AddressSpace::<u64>::new_memory(
            AddressSpaceCacheable::NotCacheable,
            true,
            cfg.ecam.base,
            cfg.ecam.base + cfg.ecam.size - 1,
            None,
        );
        &ecam_mem64
    };
    let ecam_crs_template = ResourceTemplate::new(vec![ecam_range]);
    let ecam_crs = Name::new("_CRS".into(), &ecam_crs_template);
    let ecam = Device::new("ECAM".into(), vec![&ecam_hid, &ecam_uid, &ecam_crs]);

    // \_SB.COM1: 16550 UART.
    let com1_hid = Name::new("_HID".into(), &EISAName::new("PNP0501"));
    let com1_uid = Name::new("_UID".into(), &ZERO);
    let com1_io = IO::new(COM1_PORT, COM1_PORT, 1, 8);
    let com1_irq = Interrupt::new(true, true, false, false, COM1_IRQ);
    let com1_template = ResourceTemplate::new(vec![&com1_io, &com1_irq]);
    let com1_crs = Name::new("_CRS".into(), &com1_template);
    let com1 = Device::new("COM1".into(), vec![&com1_hid, &com1_uid, &com1_crs]);

    let sb = Scope::new("\\_SB_".into(), vec![&pci0, &ecam, &com1]);

    // \_S5_: SLP_TYP for PM1a and PM1b, then two reserved values.
    let slp_typ = S5_SLP_TYP as u8;
    let s5_package = Package::new(vec![&slp_typ, &slp_typ, &ZERO, &ZERO]);
    let s5 = Name::new("_S5_".into(), &s5_package);

    let mut dsdt = Sdt::new(
        *b"DSDT",
        36,
        DSDT_REVISION,
        OEM_ID,
        OEM_TABLE_ID,
        OEM_REVISION,
    );
    let mut body = Vec::new();
    sb.to_aml_bytes(&mut body);
    s5.to_aml_bytes(&mut body);
    dsdt.append_slice(&body);
    dsdt.as_slice().to_vec()
}
