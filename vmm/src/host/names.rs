//! Human names: devices (pci.ids when installed, else a built-in table), classes, and the
//! built-in flavor names (`h200`, `h100`, `a100`, ...) that `--gpus` accepts.

use std::collections::HashMap;
use std::fs;

use super::sysfs::{HostRoot, PciId};

/// Where distributions install pci.ids, in order of preference.
pub const PCI_IDS_PATHS: [&str; 3] = [
    "/usr/share/misc/pci.ids",
    "/usr/share/hwdata/pci.ids",
    "/usr/share/pci.ids",
];

/// Devices the built-in table names: NVIDIA datacenter GPUs and the rig's emulated devices.
pub const BUILTIN_NAMES: &[(u16, u16, &str)] = &[
    (0x10de, 0x2330, "NVIDIA H100 SXM5 80GB"),
    (0x10de, 0x2331, "NVIDIA H100 PCIe"),
    (0x10de, 0x2335, "NVIDIA H200"),
    (0x10de, 0x2324, "NVIDIA H800"),
    (0x10de, 0x20b0, "NVIDIA A100 SXM4 40GB"),
    (0x10de, 0x20b2, "NVIDIA A100 SXM4 80GB"),
    (0x10de, 0x20b5, "NVIDIA A100 PCIe 80GB"),
    (0x10de, 0x20f1, "NVIDIA A100 PCIe 40GB"),
    (0x1b36, 0x0010, "QEMU NVM Express Controller"),
    (
        0x8086,
        0x10d3,
        "Intel 82574L Gigabit Network Connection (e1000e)",
    ),
    (0x1234, 0x1111, "QEMU Bochs display"),
    (0x1234, 0x11e8, "QEMU edu device"),
    (0x1af4, 0x1110, "QEMU Inter-VM shared memory (ivshmem)"),
    (0x1af4, 0x1041, "Virtio network device"),
    (0x1af4, 0x1042, "Virtio block device"),
    (0x1af4, 0x1043, "Virtio console"),
    (0x1af4, 0x1044, "Virtio RNG"),
    (0x1af4, 0x1045, "Virtio memory balloon"),
    (0x1af4, 0x1048, "Virtio SCSI"),
    (0x1af4, 0x1050, "Virtio GPU"),
    (0x1af4, 0x1053, "Virtio socket"),
    (0x1b36, 0x0008, "QEMU PCIe host bridge"),
    (0x1b36, 0x000c, "QEMU PCIe root port"),
    (
        0x8086,
        0x29c0,
        "Intel 82G33/G31/P35/P31 DRAM controller (Q35 host bridge)",
    ),
    (0x8086, 0x2918, "Intel 82801IB (ICH9) LPC interface"),
    (
        0x8086,
        0x2922,
        "Intel 82801IR/IO/IH (ICH9R) SATA controller (AHCI)",
    ),
    (0x8086, 0x2930, "Intel 82801I (ICH9) SMBus controller"),
];

/// A flavor name and the device ids it stands for, most common first.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    /// Lower-case name as typed in `--gpus NAMExN`.
    pub name: &'static str,
    /// Device ids.
    pub ids: &'static [PciId],
}

const fn nv(device: u16) -> PciId {
    PciId {
        vendor: 0x10de,
        device,
    }
}

/// The built-in flavor names.
pub const FAMILIES: &[Family] = &[
    Family {
        name: "h200",
        ids: &[nv(0x2335)],
    },
    Family {
        name: "h100",
        ids: &[nv(0x2330), nv(0x2331)],
    },
    Family {
        name: "h100sxm",
        ids: &[nv(0x2330)],
    },
    Family {
        name: "h100pcie",
        ids: &[nv(0x2331)],
    },
    Family {
        name: "h800",
        ids: &[nv(0x2324)],
    },
    Family {
        name: "a100",
        ids: &[nv(0x20b2), nv(0x20b0), nv(0x20b5), nv(0x20f1)],
    },
    Family {
        name: "a100sxm",
        ids: &[nv(0x20b2), nv(0x20b0)],
    },
    Family {
        name: "a100pcie",
        ids: &[nv(0x20b5), nv(0x20f1)],
    },
];

/// The family called `name` (case-insensitive; `-` and `_` ignored, so `H100-PCIe` works).
pub fn family(name: &str) -> Option<&'static Family> {
    let n: String = name
        .chars()
        .filter(|c| *c != '-' && *c != '_')
        .collect::<String>()
        .to_ascii_lowercase();
    FAMILIES.iter().find(|f| f.name == n)
}

/// The built-in name of a device.
pub fn builtin_name(id: PciId) -> Option<&'static str> {
    BUILTIN_NAMES
        .iter()
        .find(|(v, d, _)| *v == id.vendor && *d == id.device)
        .map(|(_, _, n)| *n)
}

/// The name of a PCI class (`class` is the 24-bit class code).
pub fn class_name(class: u32) -> &'static str {
    let base = class >> 16;
    let sub = (class >> 8) & 0xff;
    match (base, sub) {
        (0x01, 0x00) => "SCSI storage controller",
        (0x01, 0x01) => "IDE interface",
        (0x01, 0x06) => "SATA controller",
        (0x01, 0x07) => "Serial Attached SCSI controller",
        (0x01, 0x08) => "Non-Volatile memory controller",
        (0x01, _) => "Mass storage controller",
        (0x02, 0x00) => "Ethernet controller",
        (0x02, 0x07) => "InfiniBand controller",
        (0x02, _) => "Network controller",
        (0x03, 0x00) => "VGA compatible controller",
        (0x03, 0x02) => "3D controller",
        (0x03, _) => "Display controller",
        (0x04, 0x03) => "Audio device",
        (0x04, _) => "Multimedia controller",
        (0x05, _) => "Memory controller",
        (0x06, 0x00) => "Host bridge",
        (0x06, 0x01) => "ISA bridge",
        (0x06, 0x04) => "PCI bridge",
        (0x06, _) => "Bridge",
        (0x07, _) => "Communication controller",
        (0x08, _) => "System peripheral",
        (0x0c, 0x03) => "USB controller",
        (0x0c, 0x05) => "SMBus",
        (0x0c, _) => "Serial bus controller",
        (0x12, _) => "Processing accelerators",
        (0xff, _) => "Unassigned class",
        _ => "Other",
    }
}

/// The pci.ids database, when installed; names fall back to [`builtin_name`].
#[derive(Debug, Default)]
pub struct PciNames {
    text: String,
    /// Vendor id -> (vendor name, byte offset of the line after the vendor line).
    vendors: HashMap<u16, (String, usize)>,
}

impl PciNames {
    /// Loads the first pci.ids found under the root; an empty database when there is none.
    pub fn load(root: &HostRoot) -> PciNames {
        PCI_IDS_PATHS
            .iter()
            .find_map(|p| fs::read_to_string(root.path(p)).ok())
            .map(PciNames::parse)
            .unwrap_or_default()
    }

    /// Indexes pci.ids text (vendor lines: `vvvv  Name`; device lines: `\tdddd  Name`).
    pub fn parse(text: String) -> PciNames {
        let mut vendors = HashMap::new();
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            offset += line.len();
            // The class section (`C xx  Name`) ends the vendor list.
            if line.starts_with("C ") {
                break;
            }
            if let Some((id, name)) = id_line(line) {
                vendors.insert(id, (name.to_string(), offset));
            }
        }
        PciNames { text, vendors }
    }

    /// Whether a pci.ids database was loaded.
    pub fn has_database(&self) -> bool {
        !self.vendors.is_empty()
    }

    /// `Vendor Device` from pci.ids, else the built-in name, else `None`.
    pub fn lookup(&self, id: PciId) -> Option<String> {
        self.lookup_db(id)
            .or_else(|| builtin_name(id).map(str::to_string))
    }

    fn lookup_db(&self, id: PciId) -> Option<String> {
        let (vendor, start) = self.vendors.get(&id.vendor)?;
        let section = self.text.get(*start..)?;
        for line in section.lines() {
            if line.starts_with("\t\t") || line.starts_with('#') || line.is_empty() {
                continue;
            }
            let Some(rest) = line.strip_prefix('\t') else {
                break; // next vendor
            };
            if let Some((dev, name)) = id_line(rest) {
                if dev == id.device {
                    return Some(format!("{vendor} {name}"));
                }
            }
        }
        None
    }
}

/// Splits `abcd  Name` into (0xabcd, "Name").
fn id_line(line: &str) -> Option<(u16, &str)> {
    let hex = line.get(..4)?;
    let rest = line.get(4..)?;
    if !hex.chars().all(|c| c.is_ascii_hexdigit()) || !rest.starts_with("  ") {
        return None;
    }
    Some((u16::from_str_radix(hex, 16).ok()?, rest.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDS: &str = "# comment\n\
1234  Technical Corp.\n\
\t1111  Bochs display\n\
10de  NVIDIA Corporation\n\
\t2330  GH100 [H100 SXM5 80GB]\n\
\t\t10de 16c1  some subsystem\n\
\t2335  GH100 [H200 SXM 141GB]\n\
10df  Emulex Corporation\n\
\t2335  Not an NVIDIA part\n\
C 03  Display controller\n\
\t02  3D controller\n";

    #[test]
    fn pci_ids_lookup() {
        let db = PciNames::parse(IDS.to_string());
        assert!(db.has_database());
        let id = |v, d| PciId {
            vendor: v,
            device: d,
        };
        assert_eq!(
            db.lookup(id(0x10de, 0x2335)).as_deref(),
            Some("NVIDIA Corporation GH100 [H200 SXM 141GB]")
        );
        assert_eq!(
            db.lookup(id(0x10df, 0x2335)).as_deref(),
            Some("Emulex Corporation Not an NVIDIA part")
        );
        // Not in the file: falls back to the built-in table, then to nothing.
        assert_eq!(
            db.lookup(id(0x10de, 0x20b5)).as_deref(),
            Some("NVIDIA A100 PCIe 80GB")
        );
        assert_eq!(db.lookup(id(0x10de, 0x16c1)), None);
        assert_eq!(db.lookup(id(0xabcd, 0x0001)), None);
    }

    #[test]
    fn builtin_and_families() {
        let empty = PciNames::default();
        assert!(!empty.has_database());
        assert_eq!(
            empty.lookup(PciId::parse("1b36:0010").unwrap()).as_deref(),
            Some("QEMU NVM Express Controller")
        );
        assert_eq!(family("H200").unwrap().ids, &[nv(0x2335)]);
        assert_eq!(family("h100-PCIe").unwrap().ids, &[nv(0x2331)]);
        assert_eq!(family("a100").unwrap().ids.len(), 4);
        assert!(family("b200").is_none());
        assert_eq!(class_name(0x030200), "3D controller");
        assert_eq!(class_name(0x060400), "PCI bridge");
    }
}
