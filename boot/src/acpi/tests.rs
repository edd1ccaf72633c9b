//! ACPI tables parsed back from guest memory.

use super::*;
use crate::layout::{
    APIC_START, IOAPIC_START, PCI_ECAM_START, PM1A_CNT_PORT, PM1A_EVT_PORT, S5_SLP_TYP,
};
use vm_memory::GuestMemoryMmap;

fn guest(ram: u64, phys_bits: u8) -> (MemoryLayout, GuestMemoryMmap) {
    let l = MemoryLayout::plan(ram, phys_bits).unwrap();
    let m = GuestMemoryMmap::from_ranges(&l.ram_regions()).unwrap();
    (l, m)
}

fn read(m: &GuestMemoryMmap, addr: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0u8; len];
    m.read_slice(&mut v, GuestAddress(addr)).unwrap();
    v
}

fn u16_at(b: &[u8], o: usize) -> u16 {
    u16::from_le_bytes(b[o..o + 2].try_into().unwrap())
}
fn u32_at(b: &[u8], o: usize) -> u32 {
    u32::from_le_bytes(b[o..o + 4].try_into().unwrap())
}
fn u64_at(b: &[u8], o: usize) -> u64 {
    u64::from_le_bytes(b[o..o + 8].try_into().unwrap())
}
fn sum(b: &[u8]) -> u8 {
    b.iter().fold(0u8, |a, &x| a.wrapping_add(x))
}

/// Reads the SDT at `addr`, checking it lies in the BIOS area and its checksum.
fn table(m: &GuestMemoryMmap, addr: u64, sig: &[u8; 4]) -> Vec<u8> {
    let len = u32_at(&read(m, addr, 8), 4) as usize;
    assert!(
        addr >= ACPI_START && addr + len as u64 <= ACPI_END,
        "{sig:?} at {addr:#x}"
    );
    let t = read(m, addr, len);
    assert_eq!(&t[0..4], sig);
    assert_eq!(sum(&t), 0, "{} checksum", String::from_utf8_lossy(sig));
    t
}

/// All tables reachable from the RSDP, by signature.
struct Tables {
    fadt: Vec<u8>,
    fadt_at: u64,
    madt: Vec<u8>,
    mcfg: Vec<u8>,
    dsdt: Vec<u8>,
    facs: Vec<u8>,
    facs_at: u64,
}

fn walk(m: &GuestMemoryMmap, rsdp_at: GuestAddress) -> Tables {
    let rsdp = read(m, rsdp_at.0, 36);
    assert_eq!(&rsdp[0..8], b"RSD PTR ");
    assert_eq!(sum(&rsdp[0..20]), 0, "RSDP v1 checksum");
    assert_eq!(sum(&rsdp), 0, "RSDP extended checksum");
    assert_eq!(rsdp[15], 2, "RSDP revision");
    assert_eq!(u32_at(&rsdp, 20), 36);
    let xsdt_at = u64_at(&rsdp, 24);
    let xsdt = table(m, xsdt_at, b"XSDT");
    let entries: Vec<u64> = xsdt[36..].chunks(8).map(|c| u64_at(c, 0)).collect();
    assert_eq!(entries.len(), 3);
    let sigs: Vec<[u8; 4]> = entries
        .iter()
        .map(|&a| read(m, a, 4).try_into().unwrap())
        .collect();
    assert_eq!(sigs, [*b"FACP", *b"APIC", *b"MCFG"]);
    let fadt = table(m, entries[0], b"FACP");
    let dsdt_at = u64::from(u32_at(&fadt, 40));
    assert_eq!(u64_at(&fadt, 140), dsdt_at, "X_DSDT = DSDT");
    let facs_at = u64::from(u32_at(&fadt, 36));
    let facs = read(m, facs_at, 64);
    assert_eq!(&facs[0..4], b"FACS");
    assert_eq!(u32_at(&facs, 4), 64);
    Tables {
        fadt_at: entries[0],
        fadt,
        madt: table(m, entries[1], b"APIC"),
        mcfg: table(m, entries[2], b"MCFG"),
        dsdt: table(m, dsdt_at, b"DSDT"),
        facs,
        facs_at,
    }
}

fn written(cpus: u32, ram: u64, phys_bits: u8) -> (AcpiConfig, Tables) {
    let (l, m) = guest(ram, phys_bits);
    let cfg = AcpiConfig::new(cpus, &l);
    let rsdp = write_tables(&m, &cfg).unwrap();
    assert_eq!(rsdp, GuestAddress(ACPI_START));
    (cfg, walk(&m, rsdp))
}

/// An EISA id as AML writes it: DWordPrefix + the compressed id in big-endian order.
fn eisa_aml(id: &str) -> Vec<u8> {
    let b = id.as_bytes();
    let letter = |c: u8| u32::from(c - b'@');
    let hex = u32::from_str_radix(&id[3..], 16).unwrap();
    let v = (letter(b[0]) << 26) | (letter(b[1]) << 21) | (letter(b[2]) << 16) | hex;
    let mut out = vec![0x0c];
    out.extend_from_slice(&v.to_be_bytes());
    out
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[test]
fn rsdp_xsdt_and_every_checksum() {
    // walk() checks signatures, checksums and pointers.
    let (_, t) = written(2, 512 << 20, 40);
    assert_eq!(t.facs_at % 64, 0);
    assert!(t.facs_at > t.fadt_at);
}

#[test]
fn fadt_is_legacy_fixed_hardware() {
    let (_, t) = written(1, 512 << 20, 40);
    let f = &t.fadt;
    assert_eq!(f.len(), 276, "FADT length (ACPI 6.5)");
    assert!(f[8] >= 5, "FADT revision");
    assert_eq!(u16_at(f, 46), 9, "SCI_INT");
    assert_eq!(u32_at(f, 48), 0, "SMI_CMD");
    assert_eq!(u32_at(f, 56), u32::from(PM1A_EVT_PORT));
    assert_eq!(u32_at(f, 64), u32::from(PM1A_CNT_PORT));
    assert_eq!(u32_at(f, 76), 0, "no PM timer");
    assert_eq!((f[88], f[89], f[91]), (4, 2, 0), "PM1 evt/cnt/tmr lengths");
    let flags = u32_at(f, 112);
    assert_eq!(flags & (1 << 4), 0, "fixed-feature power button");
    assert_ne!(flags & (1 << 5), 0, "no sleep button");
    assert_eq!(flags & (1 << 10), 0, "no reset register (i8042 resets)");
    assert_eq!(flags & (1 << 20), 0, "not hardware-reduced");
    let boot_arch = u16_at(f, 109);
    assert_eq!(boot_arch & (1 << 1), 0, "8042 not declared by default");
    assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
    assert_eq!(boot_arch & (1 << 3), 0, "MSI allowed");
    assert_eq!(boot_arch & (1 << 5), 0, "CMOS RTC present by default");
    // X_PM1a_EVT_BLK / X_PM1a_CNT_BLK: system I/O GAS with matching widths.
    assert_eq!(&f[148..152], &[1, 32, 0, 2]);
    assert_eq!(u64_at(f, 152), u64::from(PM1A_EVT_PORT));
    assert_eq!(&f[172..176], &[1, 16, 0, 2]);
    assert_eq!(u64_at(f, 176), u64::from(PM1A_CNT_PORT));
    assert_eq!(u64_at(f, 132), 0, "FACS through FIRMWARE_CTRL only");
    assert_eq!(&t.facs[0..4], b"FACS");
}

#[test]
fn fadt_boot_arch_follows_config() {
    let (l, m) = guest(512 << 20, 40);
    let mut cfg = AcpiConfig::new(1, &l);
    cfg.cmos_rtc = false;
    cfg.i8042 = true;
    let t = walk(&m, write_tables(&m, &cfg).unwrap());
    let boot_arch = u16_at(&t.fadt, 109);
    assert_ne!(boot_arch & (1 << 5), 0, "CMOS RTC not present");
    assert_ne!(boot_arch & (1 << 1), 0, "8042 present");
    assert_ne!(boot_arch & (1 << 2), 0, "VGA not present");
}

#[test]
fn madt_entries() {
    let cpus = 4;
    let (cfg, t) = written(cpus, 512 << 20, 40);
    let m = &t.madt;
    assert_eq!(u32_at(m, 36), APIC_START as u32);
    assert_eq!(u32_at(m, 40) & 1, 1, "PCAT_COMPAT");
    let mut entries = Vec::new();
    let mut off = 44;
    while off < m.len() {
        let len = usize::from(m[off + 1]);
        assert!(len >= 2);
        entries.push(&m[off..off + len]);
        off += len;
    }
    assert_eq!(off, m.len(), "entries fill the table exactly");
    let of_type = |ty: u8| entries.iter().filter(|e| e[0] == ty).collect::<Vec<_>>();
    let lapics = of_type(0);
    assert_eq!(lapics.len(), cpus as usize);
    for (i, e) in lapics.iter().enumerate() {
        assert_eq!((e[1], e[2], e[3], u32_at(e, 4)), (8, i as u8, i as u8, 1));
    }
    let ioapics = of_type(1);
    assert_eq!(ioapics.len(), 1);
    let io = ioapics[0];
    assert_eq!(io[2], cpus as u8, "IOAPIC id");
    assert_eq!(u32_at(io, 4), IOAPIC_START as u32);
    assert_eq!(u32_at(io, 8), 0, "GSI base");
    let overrides = of_type(2);
    assert_eq!(overrides.len(), 2);
    // bus, source IRQ, GSI, flags
    assert_eq!(
        (
            overrides[0][2],
            overrides[0][3],
            u32_at(overrides[0], 4),
            u16_at(overrides[0], 8)
        ),
        (0, 0, 2, 0x5)
    );
    assert_eq!(
        (
            overrides[1][2],
            overrides[1][3],
            u32_at(overrides[1], 4),
            u16_at(overrides[1], 8)
        ),
        (0, 9, 9, 0xd)
    );
    let nmis = of_type(4);
    assert_eq!(nmis.len(), 1);
    assert_eq!((nmis[0][2], nmis[0][5]), (0xff, 1), "all CPUs, LINT1");
    assert_eq!(entries.len(), cpus as usize + 1 + 2 + 1);
    assert_eq!(cfg.num_cpus, cpus);
}

#[test]
fn mcfg_describes_ecam() {
    let (_, t) = written(1, 512 << 20, 40);
    let m = &t.mcfg;
    assert_eq!(m.len(), 36 + 8 + 16);
    assert_eq!(u64_at(m, 44), PCI_ECAM_START);
    assert_eq!(u16_at(m, 52), 0, "segment");
    assert_eq!((m[54], m[55]), (0, 0), "buses 0..=0");
}

/// Finds an address-space descriptor (`tag`: 0x87 DWord, 0x88 Word, 0x8A QWord) of resource
/// `kind` (0 memory, 1 I/O, 2 bus) and returns its (min, max, length), as u64s.
fn address_descriptors(aml: &[u8], tag: u8, kind: u8) -> Vec<(u64, u64, u64)> {
    let width = match tag {
        0x88 => 2,
        0x87 => 4,
        0x8a => 8,
        _ => unreachable!(),
    };
    let len = 3 + 5 * width;
    let get = |b: &[u8], o: usize| -> u64 {
        let mut v = [0u8; 8];
        v[..width].copy_from_slice(&b[o..o + width]);
        u64::from_le_bytes(v)
    };
    aml.windows(3 + len)
        .filter(|w| w[0] == tag && u16_at(w, 1) as usize == len && w[3] == kind)
        .map(|w| {
            let f = 6; // granularity
            (
                get(w, f + width),
                get(w, f + 2 * width),
                get(w, f + 4 * width),
            )
        })
        .collect()
}

#[test]
fn dsdt_host_bridge_and_devices() {
    let (cfg, t) = written(2, 512 << 20, 40);
    let d = &t.dsdt;
    assert_eq!(d[8], 2, "DSDT revision 2 (64-bit integers)");
    for id in ["PNP0A08", "PNP0A03", "PNP0C02", "PNP0501"] {
        assert!(find(d, &eisa_aml(id)).is_some(), "{id} missing");
    }
    for name in [
        &b"PCI0"[..],
        b"_HID",
        b"_CID",
        b"_UID",
        b"_SEG",
        b"_BBN",
        b"_ADR",
        b"_CRS",
        b"COM1",
        b"ECAM",
    ] {
        assert!(
            find(d, name).is_some(),
            "{} missing",
            String::from_utf8_lossy(name)
        );
    }
    assert!(find(d, b"_PRT").is_some(), "a _PRT by default");
    // \_S5_ = Package(4) { 5, 5, 0, 0 }: NameOp, name, PackageOp, len, count, BytePrefix 5 x2.
    let s5 = find(d, b"_S5_").expect("_S5_");
    assert_eq!(d[s5 - 1], 0x08, "NameOp");
    let pkg = &d[s5 + 4..];
    assert_eq!(pkg[0], 0x12, "PackageOp");
    assert_eq!(pkg[2], 4, "4 elements");
    assert_eq!(
        &pkg[3..7],
        &[0x0a, S5_SLP_TYP as u8, 0x0a, S5_SLP_TYP as u8]
    );

    // 64-bit window, exactly the configured range.
    let q = address_descriptors(d, 0x8a, 0);
    assert_eq!(
        q,
        vec![(cfg.mmio64.base, cfg.mmio64.last(), cfg.mmio64.size)]
    );
    assert_eq!(cfg.mmio64.base, 4 << 30);
    // 32-bit window.
    let dw = address_descriptors(d, 0x87, 0);
    assert_eq!(
        dw,
        vec![(cfg.mmio32.base, cfg.mmio32.last(), cfg.mmio32.size)]
    );
    // I/O windows: legacy ports below 0xCF8 and the PCI I/O window.
    let io = address_descriptors(d, 0x88, 1);
    assert_eq!(io, vec![(0, 0xcf7, 0xcf8), (0x1000, 0xffff, 0xf000)]);
    // Bus range 0..=0.
    assert_eq!(address_descriptors(d, 0x88, 2), vec![(0, 0, 1)]);
    // Config ports: IO(Decode16, 0xCF8, 0xCF8, 1, 8); COM1: IO(0x3F8, 0x3F8, 1, 8).
    assert!(find(d, &[0x47, 0x01, 0xf8, 0x0c, 0xf8, 0x0c, 0x01, 0x08]).is_some());
    assert!(find(d, &[0x47, 0x01, 0xf8, 0x03, 0xf8, 0x03, 0x01, 0x08]).is_some());
    // COM1 IRQ 4 (extended interrupt descriptor, consumer, edge, active high).
    assert!(find(d, &[0x89, 0x06, 0x00, 0x03, 0x01, 0x04, 0, 0, 0]).is_some());
    // ECAM reserved as a Memory32Fixed motherboard resource.
    let mut ecam = vec![0x86, 0x09, 0x00, 0x01];
    ecam.extend_from_slice(&(PCI_ECAM_START as u32).to_le_bytes());
    ecam.extend_from_slice(&(cfg.ecam.size as u32).to_le_bytes());
    assert!(find(d, &ecam).is_some());
}

#[test]
fn dsdt_64bit_window_with_46_phys_bits_and_big_ram() {
    let (_, m) = guest(64 << 20, 46);
    let mut cfg = AcpiConfig::new(1, &MemoryLayout::plan(64 << 20, 46).unwrap());
    // Pretend the RAM were 100 GiB: the window moves above it.
    let big = MemoryLayout::plan(100 << 30, 46).unwrap();
    cfg.mmio64 = big.mmio64_window();
    let rsdp = write_tables(&m, &cfg).unwrap();
    let t = walk(&m, rsdp);
    let q = address_descriptors(&t.dsdt, 0x8a, 0);
    assert_eq!(
        q,
        vec![(
            101 << 30,
            (1u64 << 46) - (1 << 30) - 1,
            (1u64 << 46) - (102 << 30)
        )]
    );
}

#[test]
fn dsdt_prt_when_intx_configured() {
    let (l, m) = guest(512 << 20, 40);
    let mut cfg = AcpiConfig::new(1, &l);
    cfg.pci_intx_gsis = Some([16, 17, 18, 19]);
    let t = walk(&m, write_tables(&m, &cfg).unwrap());
    let d = &t.dsdt;
    let prt = find(d, b"_PRT").expect("_PRT");
    // Slot 1 pin A: Package { 0x0001FFFF, 0 (ZeroOp), 0 (ZeroOp), GSI 17 }.
    let entry = [
        0x12, 0x0b, 0x04, 0x0c, 0xff, 0xff, 0x01, 0x00, 0x00, 0x00, 0x0a, 17,
    ];
    assert!(find(&d[prt..], &entry).is_some());
    // Slot 31 pin D → gsis[(31 + 3) % 4] = 18.
    let entry = [
        0x12, 0x0c, 0x04, 0x0c, 0xff, 0xff, 0x1f, 0x00, 0x0a, 0x03, 0x00, 0x0a, 18,
    ];
    assert!(find(&d[prt..], &entry).is_some());
}

#[test]
fn invalid_configs_are_refused() {
    let (l, m) = guest(512 << 20, 40);
    for cpus in [0, 255] {
        let cfg = AcpiConfig::new(cpus, &l);
        let err = write_tables(&m, &cfg).unwrap_err();
        assert!(err.to_string().contains("CPU count"), "{err}");
    }
    assert!(write_tables(&m, &AcpiConfig::new(254, &l)).is_ok());
    let mut cfg = AcpiConfig::new(1, &l);
    cfg.pci_io = Window {
        base: 0xc00,
        size: 0x100,
    };
    assert!(matches!(
        write_tables(&m, &cfg),
        Err(Error::InvalidConfig {
            what: "PCI I/O window",
            ..
        })
    ));
    let mut cfg = AcpiConfig::new(1, &l);
    cfg.ecam.end_bus = 3;
    assert!(matches!(
        write_tables(&m, &cfg),
        Err(Error::InvalidConfig { what: "ECAM", .. })
    ));
}

#[test]
fn max_cpus_fit_in_the_bios_area() {
    let (l, m) = guest(512 << 20, 40);
    let mut cfg = AcpiConfig::new(MAX_CPUS, &l);
    cfg.pci_intx_gsis = Some([16, 17, 18, 19]);
    let t = walk(&m, write_tables(&m, &cfg).unwrap());
    assert_eq!(t.madt.len(), 44 + 8 * MAX_CPUS as usize + 12 + 2 * 10 + 6);
}

/// Disassembles every table with ACPICA's `iasl` when it is installed.
#[test]
fn iasl_disassembles_the_tables() {
    let iasl_ok = std::process::Command::new("iasl")
        .arg("-v")
        .output()
        .is_ok_and(|o| o.status.success());
    if !iasl_ok {
        println!(
            "SKIP iasl_disassembles_the_tables: iasl not installed (apt-get install acpica-tools)"
        );
        return;
    }
    let (l, m) = guest(512 << 20, 40);
    let mut cfg = AcpiConfig::new(2, &l);
    cfg.pci_intx_gsis = Some([16, 17, 18, 19]);
    let t = walk(&m, write_tables(&m, &cfg).unwrap());
    let dir = std::env::temp_dir().join(format!("boot-acpi-iasl-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (name, bytes) in [
        ("dsdt", &t.dsdt),
        ("facp", &t.fadt),
        ("apic", &t.madt),
        ("mcfg", &t.mcfg),
    ] {
        let dat = dir.join(format!("{name}.dat"));
        std::fs::write(&dat, bytes).unwrap();
        let out = std::process::Command::new("iasl")
            .current_dir(&dir)
            .arg("-d")
            .arg(&dat)
            .output()
            .unwrap();
        let log = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "iasl -d {name}: {log}");
        let dsl = std::fs::read_to_string(dir.join(format!("{name}.dsl"))).unwrap();
        assert!(!dsl.contains("Invalid"), "{name}: {dsl}");
        assert!(!log.to_lowercase().contains("error"), "{name}: {log}");
        if name == "dsdt" {
            for want in [
                "PNP0A08",
                "PNP0A03",
                "PNP0C02",
                "PNP0501",
                "_S5_",
                "QWordMemory",
                "DWordMemory",
                "WordBusNumber",
                "_PRT",
            ] {
                assert!(dsl.contains(want), "{want} not in disassembly:\n{dsl}");
            }
            let max = format!("0x{:016X}", cfg.mmio64.last());
            assert!(dsl.contains(&max), "{max} not in disassembly:\n{dsl}");
        }
        if name == "facp" {
            for want in [
                "Control Method Power Button (V1) : 0",
                "Control Method Sleep Button (V1) : 1",
                "Hardware Reduced (V5) : 0",
                "8042 Present on ports 60/64 (V2) : 0",
                "CMOS RTC Not Present (V5) : 0",
            ] {
                assert!(dsl.contains(want), "{want} not in disassembly:\n{dsl}");
            }
        }
    }
    if std::env::var_os("BOOT_KEEP_IASL").is_none() {
        std::fs::remove_dir_all(&dir).unwrap();
    } else {
        println!("disassembly kept in {}", dir.display());
    }
}

#[test]
fn intx_gsis_follow_the_prt_swizzle_and_can_be_left_out() {
    use super::pci_intx_gsi;
    assert_eq!(pci_intx_gsi(1, 1), Some(17));
    assert_eq!(pci_intx_gsi(3, 1), Some(19));
    assert_eq!(pci_intx_gsi(3, 2), Some(16));
    assert_eq!(pci_intx_gsi(1, 0), None, "no pin");
    assert_eq!(pci_intx_gsi(1, 5), None);
    let (l, m) = guest(256 << 20, 40);
    let mut cfg = AcpiConfig::new(1, &l);
    cfg.pci_intx_gsis = None;
    let t = walk(&m, write_tables(&m, &cfg).unwrap());
    assert!(
        find(&t.dsdt, b"_PRT").is_none(),
        "no _PRT when INTx routing is off"
    );
}
