//! PCI devices, their IOMMU groups and whether each is ready for passthrough
//! (`conduit host list`).
//!
//! A device is *ready* when it is in an IOMMU group, bound to vfio-pci, and every other
//! member of its group is bound to vfio-pci, to pci-stub or to no driver (PCI bridges
//! aside): that is when VFIO lets a VMM open the group.
//!
//! `conduit host list --json` prints an array of [`DeviceReport`] objects with these fields:
//!
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `address` | string | `dddd:bb:dd.f` |
//! | `id` | string | `vvvv:dddd` (hex) |
//! | `name` | string or null | pci.ids name, else built-in name |
//! | `class` | string | class code, `0x030200` |
//! | `class_name` | string | e.g. `3D controller` |
//! | `driver` | string or null | bound driver |
//! | `driver_override` | string or null | sysfs `driver_override` |
//! | `iommu_group` | number or null | null when there is no IOMMU |
//! | `iommu_group_members` | array of strings | addresses in that group, this one included |
//! | `numa_node` | number or null | null when the host reports -1 |
//! | `bars` | array of {`index`, `size`, `kind` (`io`/`mem32`/`mem64`), `prefetchable`} | implemented BARs |
//! | `host_use` | array of strings | how the host uses it (mounted disk, default route) |
//! | `ready` | bool | ready for passthrough |
//! | `not_ready_because` | array of strings | empty when ready |

use std::collections::BTreeMap;
use std::path::Path;

use serde::Serialize;

use super::names::{class_name, PciNames};
use super::sysfs::{link_name, list_dir, parse_hex, read, read_opt, HostRoot, PciId};
use super::usage::host_use;
use super::HostError;

/// The VFIO PCI driver's name in sysfs.
pub const VFIO_DRIVER: &str = "vfio-pci";
/// Drivers that leave a group viable for VFIO besides vfio-pci itself.
const VIABLE_DRIVERS: [&str; 2] = [VFIO_DRIVER, "pci-stub"];
/// NVIDIA's PCI vendor id.
pub const NVIDIA: u16 = 0x10de;

/// What a BAR decodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum BarKind {
    /// I/O ports.
    Io,
    /// 32-bit memory.
    Mem32,
    /// 64-bit memory.
    Mem64,
}

/// One implemented BAR, from sysfs `resource`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Bar {
    /// BAR number (0-5).
    pub index: u8,
    /// Size in bytes.
    pub size: u64,
    /// What it decodes.
    pub kind: BarKind,
    /// Prefetchable memory.
    pub prefetchable: bool,
}

// Linux `IORESOURCE_*` flags as printed in the `resource` file.
const IORESOURCE_IO: u64 = 0x100;
const IORESOURCE_MEM: u64 = 0x200;
const IORESOURCE_PREFETCH: u64 = 0x2000;
const IORESOURCE_MEM_64: u64 = 0x10_0000;

/// Parses a sysfs `resource` file (`start end flags` per line; lines 0-5 are the BARs).
pub fn parse_resource(path: &Path, text: &str) -> Result<Vec<Bar>, HostError> {
    let mut bars = Vec::new();
    for (index, line) in text.lines().take(6).enumerate() {
        let f: Vec<&str> = line.split_whitespace().collect();
        let [start, end, flags] = f.as_slice() else {
            return Err(HostError::Parse {
                path: path.to_path_buf(),
                content: line.to_string(),
                what: "`start end flags`",
            });
        };
        let start = parse_hex(path, start, "a BAR start")?;
        let end = parse_hex(path, end, "a BAR end")?;
        let flags = parse_hex(path, flags, "BAR flags")?;
        if end == 0 || end < start || flags & (IORESOURCE_IO | IORESOURCE_MEM) == 0 {
            continue;
        }
        let kind = if flags & IORESOURCE_IO != 0 {
            BarKind::Io
        } else if flags & IORESOURCE_MEM_64 != 0 {
            BarKind::Mem64
        } else {
            BarKind::Mem32
        };
        bars.push(Bar {
            index: index as u8,
            size: end - start + 1,
            kind,
            prefetchable: flags & IORESOURCE_PREFETCH != 0,
        });
    }
    Ok(bars)
}

/// A PCI device as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PciDevice {
    /// `dddd:bb:dd.f`.
    pub address: String,
    /// Vendor and device id.
    pub id: PciId,
    /// 24-bit class code.
    pub class: u32,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override`, when set.
    pub driver_override: Option<String>,
    /// IOMMU group, when the IOMMU is on.
    pub iommu_group: Option<u32>,
    /// NUMA node, when the host knows it.
    pub numa_node: Option<u32>,
    /// Implemented BARs.
    pub bars: Vec<Bar>,
}

impl PciDevice {
    /// Reads `/sys/bus/pci/devices/ADDRESS`.
    pub fn read(root: &HostRoot, address: &str) -> Result<PciDevice, HostError> {
        let dir = root.pci_device(address);
        if !dir.exists() {
            return Err(HostError::NoDevice {
                address: address.to_string(),
                path: dir,
            });
        }
        let hex = |name: &str, what| -> Result<u64, HostError> {
            let p = dir.join(name);
            parse_hex(&p, &read(&p)?, what)
        };
        let vendor = hex("vendor", "a vendor id")?;
        let device = hex("device", "a device id")?;
        let class = hex("class", "a class code")?;
        let group_link = dir.join("iommu_group");
        let iommu_group = match link_name(&group_link)? {
            Some(g) => Some(g.parse::<u32>().map_err(|_| HostError::Parse {
                path: group_link,
                content: g,
                what: "an IOMMU group number",
            })?),
            None => None,
        };
        let numa_path = dir.join("numa_node");
        let numa_node = match read_opt(&numa_path)? {
            Some(n) => n
                .parse::<i64>()
                .map_err(|_| HostError::Parse {
                    path: numa_path,
                    content: n,
                    what: "a NUMA node",
                })
                .map(|n| u32::try_from(n).ok())?,
            None => None,
        };
        let res_path = dir.join("resource");
        let bars = match read_opt(&res_path)? {
            Some(text) => parse_resource(&res_path, &text)?,
            None => Vec::new(),
        };
        let driver_override =
            read_opt(&dir.join("driver_override"))?.filter(|s| !s.is_empty() && s != "(null)");
        Ok(PciDevice {
            address: address.to_string(),
            id: PciId {
                vendor: vendor as u16,
                device: device as u16,
            },
            class: class as u32,
            driver: link_name(&dir.join("driver"))?,
            driver_override,
            iommu_group,
            numa_node,
            bars,
        })
    }

    /// Display controller (class 0x03xxxx).
    pub fn is_gpu(&self) -> bool {
        self.class >> 16 == 0x03
    }

    /// An NVIDIA display controller.
    pub fn is_nvidia_gpu(&self) -> bool {
        self.is_gpu() && self.id.vendor == NVIDIA
    }

    /// A bridge (class 0x06xxxx): never passed through, and ignored in group viability.
    pub fn is_bridge(&self) -> bool {
        self.class >> 16 == 0x06
    }

    /// Bound to vfio-pci.
    pub fn on_vfio(&self) -> bool {
        self.driver.as_deref() == Some(VFIO_DRIVER)
    }

    /// `driver X` or `no driver`, for messages.
    pub fn driver_text(&self) -> String {
        match &self.driver {
            Some(d) => d.clone(),
            None => "no driver".to_string(),
        }
    }
}

/// Why a device is or is not ready for passthrough.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Readiness {
    /// Every reason it is not ready; empty when it is.
    pub reasons: Vec<String>,
}

impl Readiness {
    /// Ready for passthrough.
    pub fn ready(&self) -> bool {
        self.reasons.is_empty()
    }

    /// `yes` or `no because a; b`.
    pub fn text(&self) -> String {
        if self.ready() {
            "yes".to_string()
        } else {
            format!("no because {}", self.reasons.join("; "))
        }
    }
}

/// All PCI devices and IOMMU groups of the host.
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Devices, by address.
    pub devices: Vec<PciDevice>,
    /// IOMMU group -> member addresses.
    pub groups: BTreeMap<u32, Vec<String>>,
}

impl Inventory {
    /// Reads `/sys/bus/pci/devices` and `/sys/kernel/iommu_groups`.
    pub fn read(root: &HostRoot) -> Result<Inventory, HostError> {
        let mut devices = Vec::new();
        for addr in list_dir(&root.path("/sys/bus/pci/devices"))? {
            devices.push(PciDevice::read(root, &addr)?);
        }
        let gdir = root.path("/sys/kernel/iommu_groups");
        let mut groups = BTreeMap::new();
        for g in list_dir(&gdir)? {
            let Ok(n) = g.parse::<u32>() else { continue };
            groups.insert(n, list_dir(&gdir.join(&g).join("devices"))?);
        }
        Ok(Inventory { devices, groups })
    }

    /// The device at `address`.
    pub fn get(&self, address: &str) -> Option<&PciDevice> {
        self.devices.iter().find(|d| d.address == address)
    }

    /// Members of an IOMMU group.
    pub fn members(&self, group: u32) -> &[String] {
        self.groups.get(&group).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Members of `group` that keep VFIO from opening it: bound to a host driver and not a
    /// bridge. Each as (address, driver).
    pub fn group_blockers(&self, group: u32) -> Vec<(String, String)> {
        self.members(group)
            .iter()
            .filter_map(|m| match self.get(m) {
                Some(d) if d.is_bridge() => None,
                Some(d) => match &d.driver {
                    Some(drv) if !VIABLE_DRIVERS.contains(&drv.as_str()) => {
                        Some((m.clone(), drv.clone()))
                    }
                    _ => None,
                },
                None => Some((
                    m.clone(),
                    "an unknown driver (not in /sys/bus/pci/devices)".into(),
                )),
            })
            .collect()
    }

    /// Whether `dev` could be passed through now, and why not.
    pub fn readiness(&self, dev: &PciDevice) -> Readiness {
        let mut reasons = Vec::new();
        if dev.is_bridge() {
            let class = class_name(dev.class);
            let article = if class.starts_with(['A', 'E', 'I', 'O', 'U']) {
                "an"
            } else {
                "a"
            };
            reasons.push(format!(
                "it is {article} {class} (bridges are not passed through)"
            ));
            return Readiness { reasons };
        }
        let Some(group) = dev.iommu_group else {
            reasons.push(
                "it is in no IOMMU group: the IOMMU is absent or off (see `conduit host check`)"
                    .to_string(),
            );
            return Readiness { reasons };
        };
        if !dev.on_vfio() {
            reasons.push(format!(
                "it is bound to {}, not vfio-pci (run `conduit host bind {}`)",
                dev.driver_text(),
                dev.address
            ));
        }
        for (m, drv) in self.group_blockers(group) {
            if m != dev.address {
                reasons.push(format!(
                    "IOMMU group {group} also holds {m}, bound to {drv}"
                ));
            }
        }
        Readiness { reasons }
    }
}

/// Which devices `list` shows.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    /// Every class, not only display controllers.
    pub all_classes: bool,
    /// Only this id.
    pub id: Option<PciId>,
}

/// One device as `conduit host list` shows it (field names are stable: see the module doc).
#[derive(Debug, Clone, Serialize)]
pub struct DeviceReport {
    /// Address.
    pub address: String,
    /// `vvvv:dddd`.
    pub id: String,
    /// Human name.
    pub name: Option<String>,
    /// `0x030200`.
    pub class: String,
    /// Class name.
    pub class_name: &'static str,
    /// Bound driver.
    pub driver: Option<String>,
    /// `driver_override`.
    pub driver_override: Option<String>,
    /// IOMMU group.
    pub iommu_group: Option<u32>,
    /// Addresses in the group.
    pub iommu_group_members: Vec<String>,
    /// NUMA node.
    pub numa_node: Option<u32>,
    /// BARs.
    pub bars: Vec<Bar>,
    /// How the host uses it.
    pub host_use: Vec<String>,
    /// Ready for passthrough.
    pub ready: bool,
    /// Why not.
    pub not_ready_because: Vec<String>,
}

/// The devices matching `filter`, described.
pub fn list(root: &HostRoot, filter: &ListFilter) -> Result<Vec<DeviceReport>, HostError> {
    let inv = Inventory::read(root)?;
    let names = PciNames::load(root);
    let mut out = Vec::new();
    for dev in &inv.devices {
        if !filter.all_classes && !dev.is_gpu() {
            continue;
        }
        if filter.id.is_some_and(|id| id != dev.id) {
            continue;
        }
        let r = inv.readiness(dev);
        out.push(DeviceReport {
            address: dev.address.clone(),
            id: dev.id.to_string(),
            name: names.lookup(dev.id),
            class: format!("0x{:06x}", dev.class),
            class_name: class_name(dev.class),
            driver: dev.driver.clone(),
            driver_override: dev.driver_override.clone(),
            iommu_group: dev.iommu_group,
            iommu_group_members: dev
                .iommu_group
                .map(|g| inv.members(g).to_vec())
                .unwrap_or_default(),
            numa_node: dev.numa_node,
            bars: dev.bars.clone(),
            host_use: host_use(root, &dev.address)?,
            ready: r.ready(),
            not_ready_because: r.reasons,
        });
    }
    Ok(out)
}

/// `16 MiB`, `256 GiB`, `4 KiB`, `32 B`.
pub fn fmt_size(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut v = bytes;
    let mut u = 0;
    while v >= 1024 && v.is_multiple_of(1024) && u + 1 < UNITS.len() {
        v /= 1024;
        u += 1;
    }
    if v >= 1024 && u + 1 < UNITS.len() {
        // Not a round power of two: one decimal in the next unit.
        return format!("{:.1} {}", v as f64 / 1024.0, UNITS[u + 1]);
    }
    format!("{v} {}", UNITS[u])
}

/// Renders reports as text, one block per device.
pub fn render_text(reports: &[DeviceReport]) -> String {
    let mut s = String::new();
    for r in reports {
        s.push_str(&format!(
            "{}  {}  {}\n",
            r.address,
            r.id,
            r.name.as_deref().unwrap_or("(unknown device)")
        ));
        s.push_str(&format!(
            "    class {} ({})  driver {}  NUMA node {}\n",
            r.class,
            r.class_name,
            r.driver.as_deref().unwrap_or("none"),
            r.numa_node.map_or("unknown".to_string(), |n| n.to_string())
        ));
        match r.iommu_group {
            Some(g) => s.push_str(&format!(
                "    IOMMU group {g}: {}\n",
                r.iommu_group_members.join(", ")
            )),
            None => s.push_str("    IOMMU group: none\n"),
        }
        if !r.bars.is_empty() {
            let bars: Vec<String> = r
                .bars
                .iter()
                .map(|b| {
                    let kind = match b.kind {
                        BarKind::Io => "io",
                        BarKind::Mem32 => "mem32",
                        BarKind::Mem64 => "mem64",
                    };
                    let pref = if b.prefetchable { " pref" } else { "" };
                    format!("BAR{} {} {kind}{pref}", b.index, fmt_size(b.size))
                })
                .collect();
            s.push_str(&format!("    {}\n", bars.join(", ")));
        }
        for u in &r.host_use {
            s.push_str(&format!("    used by the host: {u}\n"));
        }
        if r.ready {
            s.push_str("    ready for passthrough: yes\n");
        } else {
            s.push_str(&format!(
                "    ready for passthrough: no because {}\n",
                r.not_ready_because.join("; ")
            ));
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{FakeHost, H200_RESOURCE};
    use super::*;

    #[test]
    fn bar_sizes_from_resource() {
        let bars = parse_resource(Path::new("resource"), H200_RESOURCE).unwrap();
        assert_eq!(
            bars.iter().map(|b| (b.index, b.size)).collect::<Vec<_>>(),
            vec![(0, 16 << 20), (2, 256 << 30), (4, 32 << 20)]
        );
        assert!(bars
            .iter()
            .all(|b| b.kind == BarKind::Mem64 && b.prefetchable));
        let io = "0x000000000000c000 0x000000000000c01f 0x0000000000040101\n\
                  0x00000000fe000000 0x00000000fe000fff 0x0000000000040200\n";
        let bars = parse_resource(Path::new("resource"), io).unwrap();
        assert_eq!(bars[0].kind, BarKind::Io);
        assert_eq!(bars[0].size, 32);
        assert_eq!(bars[1].kind, BarKind::Mem32);
        assert!(!bars[1].prefetchable);
        assert!(parse_resource(Path::new("resource"), "0x0 0x1\n").is_err());
        assert_eq!(fmt_size(256 << 30), "256 GiB");
        assert_eq!(fmt_size(16 << 20), "16 MiB");
        assert_eq!(fmt_size(1536), "1.5 KiB");
    }

    #[test]
    fn list_names_bars_and_readiness() {
        let h = FakeHost::new();
        h.iommu("dmar0");
        // GPU ready: alone in its group, on vfio-pci.
        h.pci("0000:17:00.0", "10de:2335", 0x030200)
            .driver("vfio-pci")
            .group(20)
            .numa(0)
            .resource(H200_RESOURCE);
        // GPU on nouveau, with its audio function on snd_hda_intel in the same group.
        h.pci("0000:65:00.0", "10de:2330", 0x030200)
            .driver("nouveau")
            .group(30)
            .numa(1);
        h.pci("0000:65:00.1", "10de:22a3", 0x040300)
            .driver("snd_hda_intel")
            .group(30);
        // A bridge in a group does not spoil it.
        h.pci("0000:80:01.0", "8086:2030", 0x060400)
            .driver("pcieport")
            .group(40);
        h.pci("0000:81:00.0", "10de:20b5", 0x030200)
            .group(40)
            .numa(1);
        h.pci("0000:00:1f.0", "8086:a1c8", 0x060100).group(1);

        let root = h.root();
        let gpus = list(&root, &ListFilter::default()).unwrap();
        assert_eq!(
            gpus.iter().map(|r| r.address.as_str()).collect::<Vec<_>>(),
            vec!["0000:17:00.0", "0000:65:00.0", "0000:81:00.0"]
        );
        let h200 = &gpus[0];
        assert_eq!(h200.name.as_deref(), Some("NVIDIA H200"));
        assert_eq!(h200.class_name, "3D controller");
        assert!(h200.ready, "{:?}", h200.not_ready_because);
        assert_eq!(h200.bars.len(), 3);
        assert_eq!(h200.bars[1].size, 256 << 30);
        assert_eq!(h200.numa_node, Some(0));

        let h100 = &gpus[1];
        assert_eq!(h100.name.as_deref(), Some("NVIDIA H100 SXM5 80GB"));
        assert!(!h100.ready);
        assert_eq!(
            h100.iommu_group_members,
            vec!["0000:65:00.0", "0000:65:00.1"]
        );
        assert!(h100.not_ready_because[0].contains("bound to nouveau, not vfio-pci"));
        assert!(
            h100.not_ready_because[1].contains("also holds 0000:65:00.1, bound to snd_hda_intel")
        );

        let a100 = &gpus[2];
        assert_eq!(
            a100.not_ready_because,
            vec!["it is bound to no driver, not vfio-pci (run `conduit host bind 0000:81:00.0`)"]
        );

        let all = list(
            &root,
            &ListFilter {
                all_classes: true,
                id: None,
            },
        )
        .unwrap();
        assert_eq!(all.len(), 6);
        let bridge = all.iter().find(|r| r.address == "0000:80:01.0").unwrap();
        assert!(bridge.not_ready_because[0].contains("bridges are not passed through"));

        let only = list(
            &root,
            &ListFilter {
                all_classes: true,
                id: Some(PciId::parse("10de:22a3").unwrap()),
            },
        )
        .unwrap();
        assert_eq!(only.len(), 1);
        assert_eq!(only[0].name, None);
        let text = render_text(&only);
        assert!(text.contains("(unknown device)"), "{text}");
        assert!(
            text.contains("IOMMU group 30: 0000:65:00.0, 0000:65:00.1"),
            "{text}"
        );
    }

    #[test]
    fn list_without_iommu_and_json_shape() {
        let h = FakeHost::new();
        h.pci("0000:00:04.0", "1b36:0010", 0x010802)
            .driver("nvme")
            .numa_raw("-1")
            .resource("0x00000000fe000000 0x00000000fe003fff 0x0000000000140204\n");
        let all = list(
            &h.root(),
            &ListFilter {
                all_classes: true,
                id: None,
            },
        )
        .unwrap();
        let v = serde_json::to_value(&all).unwrap();
        let o = &v[0];
        let mut keys: Vec<&str> = o.as_object().unwrap().keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(
            keys,
            vec![
                "address",
                "bars",
                "class",
                "class_name",
                "driver",
                "driver_override",
                "host_use",
                "id",
                "iommu_group",
                "iommu_group_members",
                "name",
                "not_ready_because",
                "numa_node",
                "ready"
            ]
        );
        assert_eq!(o["id"], "1b36:0010");
        assert_eq!(o["name"], "QEMU NVM Express Controller");
        assert_eq!(o["class"], "0x010802");
        assert_eq!(o["driver"], "nvme");
        assert!(o["iommu_group"].is_null());
        assert!(o["numa_node"].is_null());
        assert_eq!(o["bars"][0]["kind"], "mem64");
        assert_eq!(o["bars"][0]["size"], 16384);
        assert_eq!(o["ready"], false);
        assert!(o["not_ready_because"][0]
            .as_str()
            .unwrap()
            .contains("no IOMMU group"));
    }
}
