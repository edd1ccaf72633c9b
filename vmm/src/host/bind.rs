//! Moving whole IOMMU groups to vfio-pci at run time, and back (`conduit host bind|unbind`).
//!
//! Binding a device is three sysfs writes: `driver_override` = `vfio-pci` (so only vfio-pci
//! may claim it), `drivers/OLD/unbind`, then `drivers_probe`. VFIO can only open a group
//! whose every member (bridges aside) is on vfio-pci or on no driver, so the whole group
//! moves. The original drivers are recorded in a state file *before* the writes, so an
//! interrupted bind can still be undone by `unbind`.
//!
//! [`plan_bind`] and [`plan_unbind`] read the host and return the writes as data;
//! [`apply_bind`] and [`apply_unbind`] hand them to a [`Kernel`] and check the result in
//! sysfs. The real kernel is [`SysfsKernel`]; the unit tests use a simulated one.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::inventory::{Inventory, PciDevice, VFIO_DRIVER};
use super::sysfs::{exists, link_name, normalize_address, read_opt, HostRoot, PciId};
use super::usage::host_use;
use super::HostError;

/// The kernel side of bind/unbind: sysfs writes and module loading.
pub trait Kernel {
    /// Writes `value` to the sysfs attribute `path`.
    fn write(&mut self, path: &Path, value: &str) -> Result<(), HostError>;
    /// Loads a kernel module.
    fn modprobe(&mut self, module: &str) -> Result<(), HostError>;
    /// Waits a little for an asynchronous probe to finish; the real kernel needs it rarely.
    fn settle(&mut self) {}
}

/// The real kernel: writes sysfs files, runs `modprobe`.
#[derive(Debug, Default)]
pub struct SysfsKernel;

impl Kernel for SysfsKernel {
    fn write(&mut self, path: &Path, value: &str) -> Result<(), HostError> {
        let err = |source| HostError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source,
        };
        // No O_CREAT/O_TRUNC: these are existing sysfs attributes.
        let mut f = fs::OpenOptions::new().write(true).open(path).map_err(err)?;
        f.write_all(value.as_bytes()).map_err(err)
    }

    fn modprobe(&mut self, module: &str) -> Result<(), HostError> {
        let out =
            Command::new("modprobe")
                .arg(module)
                .output()
                .map_err(|e| HostError::Modprobe {
                    module: module.to_string(),
                    detail: e.to_string(),
                })?;
        if out.status.success() {
            Ok(())
        } else {
            Err(HostError::Modprobe {
                module: module.to_string(),
                detail: format!(
                    "{}: {}",
                    out.status,
                    String::from_utf8_lossy(&out.stderr).trim()
                ),
            })
        }
    }

    fn settle(&mut self) {
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// What `bind` was asked to bind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BindTarget {
    /// One device (and so its group).
    Address(String),
    /// Devices with this id (all, or `--count` of them).
    Id(PciId),
}

impl BindTarget {
    /// Parses `0000:17:00.0`, `17:00.0` or `10de:2335`.
    pub fn parse(s: &str) -> Result<BindTarget, HostError> {
        if let Ok(a) = normalize_address(s) {
            return Ok(BindTarget::Address(a));
        }
        PciId::parse(s)
            .map(BindTarget::Id)
            .map_err(|_| HostError::BadAddress(s.to_string()))
    }
}

/// Options of `bind`.
#[derive(Debug, Clone, Copy, Default)]
pub struct BindOptions {
    /// With an id: bind this many devices (default: all of that id).
    pub count: Option<usize>,
    /// Bind even a group holding a device the host uses.
    pub force: bool,
}

/// One sysfs write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Attribute written.
    pub path: PathBuf,
    /// Value written.
    pub value: String,
}

/// Moving one device to vfio-pci.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceMove {
    /// Device.
    pub address: String,
    /// Driver it is on now.
    pub from: Option<String>,
    /// The writes, in order.
    pub steps: Vec<Step>,
}

/// Binding one IOMMU group.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupBind {
    /// Group number.
    pub group: u32,
    /// Devices that moves; empty when the group is already on vfio-pci.
    pub moves: Vec<DeviceMove>,
    /// Members already on vfio-pci.
    pub already: Vec<String>,
    /// Bridges left alone.
    pub bridges: Vec<String>,
    /// Host uses overridden by `--force`.
    pub forced: Vec<String>,
}

/// Everything `bind` will do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BindPlan {
    /// vfio-pci is not loaded yet.
    pub load_vfio_pci: bool,
    /// Groups, in address order of the devices asked for.
    pub groups: Vec<GroupBind>,
}

impl BindPlan {
    /// Nothing to do: every group is already on vfio-pci.
    pub fn is_noop(&self) -> bool {
        self.groups.iter().all(|g| g.moves.is_empty())
    }
}

/// One device recorded in the state file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BoundDevice {
    /// Device.
    pub address: String,
    /// Its IOMMU group when it was bound.
    pub iommu_group: u32,
    /// Driver before `bind` (null: none).
    pub original_driver: Option<String>,
}

/// The state file: what `bind` moved, so `unbind` can restore it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct BindState {
    /// Format version (1).
    pub version: u32,
    /// Devices moved to vfio-pci.
    pub devices: Vec<BoundDevice>,
}

impl BindState {
    /// Reads the state file; empty when there is none.
    pub fn load(path: &Path) -> Result<BindState, HostError> {
        match read_opt(path)? {
            Some(text) if !text.is_empty() => {
                serde_json::from_str(&text).map_err(|source| HostError::State {
                    path: path.to_path_buf(),
                    source,
                })
            }
            _ => Ok(BindState {
                version: 1,
                devices: Vec::new(),
            }),
        }
    }

    /// Writes the state file atomically (temporary file, then rename); removes it when empty.
    pub fn save(&self, path: &Path) -> Result<(), HostError> {
        let werr = |p: &Path, source| HostError::Write {
            path: p.to_path_buf(),
            value: "bind state".to_string(),
            source,
        };
        if self.devices.is_empty() {
            return match fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(werr(path, e)),
                _ => Ok(()),
            };
        }
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(|e| werr(dir, e))?;
        }
        let mut text = serde_json::to_string_pretty(self).map_err(|source| HostError::State {
            path: path.to_path_buf(),
            source,
        })?;
        text.push('\n');
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, text).map_err(|e| werr(&tmp, e))?;
        fs::rename(&tmp, path).map_err(|e| werr(path, e))
    }

    /// The record of `address`.
    pub fn get(&self, address: &str) -> Option<&BoundDevice> {
        self.devices.iter().find(|d| d.address == address)
    }
}

/// Why `dev` cannot be bound, if it cannot (no group, or its group is used by the host).
fn bind_blocker(
    root: &HostRoot,
    inv: &Inventory,
    dev: &PciDevice,
) -> Result<Option<String>, HostError> {
    let Some(group) = dev.iommu_group else {
        return Ok(Some(
            "in no IOMMU group (the IOMMU is absent or off)".to_string(),
        ));
    };
    let uses = group_host_uses(root, inv, group)?;
    Ok((!uses.is_empty()).then(|| format!("IOMMU group {group}: {}", uses.join("; "))))
}

/// How the host uses the members of `group`: `ADDRESS: use` each.
fn group_host_uses(root: &HostRoot, inv: &Inventory, group: u32) -> Result<Vec<String>, HostError> {
    let mut uses = Vec::new();
    for m in inv.members(group) {
        for u in host_use(root, m)? {
            uses.push(format!("{m}: {u}"));
        }
    }
    Ok(uses)
}

/// Works out what `bind TARGET` must write; changes nothing.
pub fn plan_bind(
    root: &HostRoot,
    target: &BindTarget,
    opts: BindOptions,
) -> Result<BindPlan, HostError> {
    let inv = Inventory::read(root)?;
    let picks: Vec<&PciDevice> = match target {
        BindTarget::Address(a) => vec![inv.get(a).ok_or_else(|| HostError::NoDevice {
            address: a.clone(),
            path: root.pci_device(a),
        })?],
        BindTarget::Id(id) => {
            let matching: Vec<&PciDevice> = inv
                .devices
                .iter()
                .filter(|d| d.id == *id && !d.is_bridge())
                .collect();
            if matching.is_empty() {
                return Err(HostError::NoMatch { id: id.to_string() });
            }
            match opts.count {
                None => matching,
                Some(wanted) => {
                    let mut found = Vec::new();
                    let mut eligible = Vec::new();
                    for d in &matching {
                        let blocker = bind_blocker(root, &inv, d)?;
                        match blocker {
                            Some(b) if !(opts.force && d.iommu_group.is_some()) => {
                                found.push((d.address.clone(), b))
                            }
                            _ => {
                                found.push((d.address.clone(), "can be bound".to_string()));
                                eligible.push(*d);
                            }
                        }
                    }
                    if eligible.len() < wanted {
                        return Err(HostError::NotEnoughToBind {
                            id: id.to_string(),
                            wanted,
                            available: eligible.len(),
                            found,
                        });
                    }
                    // Devices already on vfio-pci first (binding them is free), then by address.
                    eligible.sort_by_key(|d| (!d.on_vfio(), d.address.clone()));
                    eligible.truncate(wanted);
                    eligible.sort_by_key(|d| d.address.clone());
                    eligible
                }
            }
        }
    };

    let mut groups: Vec<GroupBind> = Vec::new();
    for dev in picks {
        let group = dev.iommu_group.ok_or_else(|| HostError::NoIommuGroup {
            address: dev.address.clone(),
        })?;
        if groups.iter().any(|g| g.group == group) {
            continue;
        }
        let uses = group_host_uses(root, &inv, group)?;
        if !uses.is_empty() && !opts.force {
            return Err(HostError::InUse {
                address: dev.address.clone(),
                group,
                reason: uses.join("; "),
            });
        }
        let mut g = GroupBind {
            group,
            moves: Vec::new(),
            already: Vec::new(),
            bridges: Vec::new(),
            forced: uses,
        };
        for m in inv.members(group) {
            let member = inv.get(m).ok_or_else(|| HostError::NoDevice {
                address: m.clone(),
                path: root.pci_device(m),
            })?;
            if member.is_bridge() {
                g.bridges.push(m.clone());
            } else if member.on_vfio() {
                g.already.push(m.clone());
            } else {
                g.moves.push(move_to_vfio(root, member));
            }
        }
        groups.push(g);
    }
    let load_vfio_pci =
        groups.iter().any(|g| !g.moves.is_empty()) && !exists(&root.pci_driver(VFIO_DRIVER));
    Ok(BindPlan {
        load_vfio_pci,
        groups,
    })
}

fn move_to_vfio(root: &HostRoot, dev: &PciDevice) -> DeviceMove {
    let a = &dev.address;
    let mut steps = vec![Step {
        path: root.pci_device(a).join("driver_override"),
        value: VFIO_DRIVER.to_string(),
    }];
    if let Some(d) = &dev.driver {
        steps.push(Step {
            path: root.pci_driver(d).join("unbind"),
            value: a.clone(),
        });
    }
    steps.push(Step {
        path: root.path("/sys/bus/pci/drivers_probe"),
        value: a.clone(),
    });
    DeviceMove {
        address: a.clone(),
        from: dev.driver.clone(),
        steps,
    }
}

/// The driver of `address` once it settles on `expected` (a few tries for async probes).
fn driver_after(
    root: &HostRoot,
    kernel: &mut dyn Kernel,
    address: &str,
    expected: Option<&str>,
) -> Result<Option<String>, HostError> {
    let link = root.pci_device(address).join("driver");
    let mut now = link_name(&link)?;
    for _ in 0..20 {
        if now.as_deref() == expected {
            break;
        }
        kernel.settle();
        now = link_name(&link)?;
    }
    Ok(now)
}

fn name_or_none(d: Option<&str>) -> String {
    d.unwrap_or("none").to_string()
}

/// Carries out a bind plan: loads vfio-pci if needed, records the original drivers, writes,
/// and checks that every moved device is on vfio-pci.
pub fn apply_bind(
    root: &HostRoot,
    plan: &BindPlan,
    kernel: &mut dyn Kernel,
) -> Result<(), HostError> {
    if plan.is_noop() {
        return Ok(());
    }
    if plan.load_vfio_pci {
        kernel.modprobe(VFIO_DRIVER)?;
        if !exists(&root.pci_driver(VFIO_DRIVER)) {
            return Err(HostError::Modprobe {
                module: VFIO_DRIVER.to_string(),
                detail: format!("{} did not appear", root.pci_driver(VFIO_DRIVER).display()),
            });
        }
    }
    let mut state = BindState::load(root.state_file())?;
    state.version = 1;
    for g in &plan.groups {
        for m in &g.moves {
            if state.get(&m.address).is_none() {
                state.devices.push(BoundDevice {
                    address: m.address.clone(),
                    iommu_group: g.group,
                    original_driver: m.from.clone(),
                });
            }
        }
    }
    state.save(root.state_file())?;
    for g in &plan.groups {
        for m in &g.moves {
            for s in &m.steps {
                kernel.write(&s.path, &s.value)?;
            }
            let now = driver_after(root, kernel, &m.address, Some(VFIO_DRIVER))?;
            if now.as_deref() != Some(VFIO_DRIVER) {
                return Err(HostError::BindFailed {
                    address: m.address.clone(),
                    group: g.group,
                    expected: VFIO_DRIVER.to_string(),
                    actual: name_or_none(now.as_deref()),
                });
            }
        }
    }
    Ok(())
}

/// Plans and applies `bind`.
pub fn bind(
    root: &HostRoot,
    target: &BindTarget,
    opts: BindOptions,
    kernel: &mut dyn Kernel,
) -> Result<BindPlan, HostError> {
    let plan = plan_bind(root, target, opts)?;
    apply_bind(root, &plan, kernel)?;
    Ok(plan)
}

/// What `unbind` restores.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum UnbindTarget {
    /// The group of this device (every recorded member).
    Address(String),
    /// Everything in the state file.
    All,
}

/// Giving one device back to its original driver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restore {
    /// Device.
    pub address: String,
    /// IOMMU group recorded.
    pub iommu_group: u32,
    /// Driver to return to (None: stays without a driver).
    pub to: Option<String>,
    /// Writes: clear driver_override, unbind from vfio-pci, probe. Empty when the device is
    /// already back (the record is just dropped).
    pub steps: Vec<Step>,
    /// Check afterwards that the device is on `to`.
    pub verify: bool,
}

/// Works out what `unbind` must write; changes nothing.
pub fn plan_unbind(root: &HostRoot, target: &UnbindTarget) -> Result<Vec<Restore>, HostError> {
    let state = BindState::load(root.state_file())?;
    let records: Vec<&BoundDevice> = match target {
        UnbindTarget::All => state.devices.iter().collect(),
        UnbindTarget::Address(a) => {
            let rec = state.get(a).ok_or_else(|| HostError::NotRecorded {
                address: a.clone(),
                path: root.state_file().to_path_buf(),
            })?;
            state
                .devices
                .iter()
                .filter(|d| d.iommu_group == rec.iommu_group)
                .collect()
        }
    };
    let mut out = Vec::new();
    for rec in records {
        let dev = PciDevice::read(root, &rec.address)?;
        let a = &rec.address;
        let mut steps = Vec::new();
        if dev.on_vfio() || dev.driver_override.as_deref() == Some(VFIO_DRIVER) {
            steps.push(Step {
                path: root.pci_device(a).join("driver_override"),
                value: "\n".to_string(),
            });
        }
        if dev.on_vfio() {
            steps.push(Step {
                path: root.pci_driver(VFIO_DRIVER).join("unbind"),
                value: a.clone(),
            });
        }
        // A device on vfio-pci, or left driverless by an interrupted bind, is probed again;
        // one already on another driver is left where it is.
        let restore = (dev.on_vfio() || dev.driver.is_none()) && dev.driver != rec.original_driver;
        if restore && rec.original_driver.is_some() {
            steps.push(Step {
                path: root.path("/sys/bus/pci/drivers_probe"),
                value: a.clone(),
            });
        }
        out.push(Restore {
            address: a.clone(),
            iommu_group: rec.iommu_group,
            to: rec.original_driver.clone(),
            steps,
            verify: restore,
        });
    }
    Ok(out)
}

/// Carries out an unbind plan; each device's record is dropped once it is back.
pub fn apply_unbind(
    root: &HostRoot,
    plan: &[Restore],
    kernel: &mut dyn Kernel,
) -> Result<(), HostError> {
    let mut state = BindState::load(root.state_file())?;
    for r in plan {
        for s in &r.steps {
            kernel.write(&s.path, &s.value)?;
        }
        if r.verify {
            let mut now = driver_after(root, kernel, &r.address, r.to.as_deref())?;
            // drivers_probe may pick another driver (or none): bind the recorded one by name.
            if now.is_none() {
                if let Some(d) = &r.to {
                    if exists(&root.pci_driver(d)) {
                        kernel.write(&root.pci_driver(d).join("bind"), &r.address)?;
                        now = driver_after(root, kernel, &r.address, Some(d))?;
                    }
                }
            }
            if now != r.to {
                return Err(HostError::BindFailed {
                    address: r.address.clone(),
                    group: r.iommu_group,
                    expected: name_or_none(r.to.as_deref()),
                    actual: name_or_none(now.as_deref()),
                });
            }
        }
        state.devices.retain(|d| d.address != r.address);
        state.save(root.state_file())?;
    }
    Ok(())
}

/// Plans and applies `unbind`.
pub fn unbind(
    root: &HostRoot,
    target: &UnbindTarget,
    kernel: &mut dyn Kernel,
) -> Result<Vec<Restore>, HostError> {
    let plan = plan_unbind(root, target)?;
    apply_unbind(root, &plan, kernel)?;
    Ok(plan)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{FakeHost, FakeKernel};
    use super::*;

    /// A host with a GPU + audio function in group 30 (nouveau / snd_hda_intel), a bridge in
    /// group 30 too, an NVMe disk holding / in group 4, and the default-route NIC in group 5.
    fn host() -> FakeHost {
        let h = FakeHost::new();
        h.iommu("dmar0");
        h.pci("0000:65:00.0", "10de:2335", 0x030200)
            .driver("nouveau")
            .group(30)
            .numa(0);
        h.pci("0000:65:00.1", "10de:22a3", 0x040300)
            .driver("snd_hda_intel")
            .group(30);
        h.pci("0000:64:01.0", "8086:2030", 0x060400)
            .driver("pcieport")
            .group(30);
        h.pci("0000:00:04.0", "1b36:0010", 0x010802)
            .driver("nvme")
            .group(4)
            .block("nvme/nvme0", "nvme0n1", "259:0")
            .block("nvme/nvme0/nvme0n1", "nvme0n1p1", "259:1");
        h.pci("0000:00:03.0", "8086:10d3", 0x020000)
            .driver("e1000e")
            .group(5)
            .net("eth0");
        h.file(
            "/proc/self/mountinfo",
            "22 27 0:21 / /proc rw,relatime - proc proc rw\n\
             27 1 259:1 / / rw,relatime - ext4 /dev/root rw\n",
        );
        h.file(
            "/proc/net/route",
            "Iface\tDestination\tGateway \tFlags\tRefCnt\tUse\tMetric\tMask\t\tMTU\tWindow\tIRTT\n\
             eth0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\t0\t0\t0\n\
             eth0\t000200C0\t00000000\t0001\t0\t0\t0\t00FFFFFF\t0\t0\t0\n",
        );
        h
    }

    fn kernel(h: &FakeHost) -> FakeKernel<'_> {
        let mut k = FakeKernel::new(h);
        for (a, d) in [
            ("0000:65:00.0", "nouveau"),
            ("0000:65:00.1", "snd_hda_intel"),
            ("0000:00:04.0", "nvme"),
            ("0000:00:03.0", "e1000e"),
        ] {
            k.natural.insert(a.to_string(), d.to_string());
        }
        k
    }

    fn addr(a: &str) -> BindTarget {
        BindTarget::parse(a).unwrap()
    }

    #[test]
    fn targets_parse() {
        assert_eq!(addr("65:00.0"), BindTarget::Address("0000:65:00.0".into()));
        assert_eq!(
            addr("10de:2335"),
            BindTarget::Id(PciId {
                vendor: 0x10de,
                device: 0x2335
            })
        );
        assert!(BindTarget::parse("gpu0").is_err());
    }

    #[test]
    fn bind_moves_the_whole_group_and_records_it() {
        let h = host();
        let root = h.root();
        let plan = plan_bind(&root, &addr("0000:65:00.0"), BindOptions::default()).unwrap();
        assert!(plan.load_vfio_pci);
        assert_eq!(plan.groups.len(), 1);
        let g = &plan.groups[0];
        assert_eq!(g.group, 30);
        assert_eq!(g.bridges, vec!["0000:64:01.0"]);
        let moved: Vec<_> = g
            .moves
            .iter()
            .map(|m| (m.address.as_str(), m.from.as_deref()))
            .collect();
        assert_eq!(
            moved,
            vec![
                ("0000:65:00.0", Some("nouveau")),
                ("0000:65:00.1", Some("snd_hda_intel"))
            ]
        );

        let mut k = kernel(&h);
        apply_bind(&root, &plan, &mut k).unwrap();
        assert_eq!(k.modprobes, vec!["vfio-pci"]);
        assert_eq!(
            k.writes[..3],
            [
                (
                    "bus/pci/devices/0000:65:00.0/driver_override".to_string(),
                    "vfio-pci".to_string()
                ),
                (
                    "bus/pci/drivers/nouveau/unbind".to_string(),
                    "0000:65:00.0".to_string()
                ),
                (
                    "bus/pci/drivers_probe".to_string(),
                    "0000:65:00.0".to_string()
                ),
            ]
        );
        assert_eq!(h.driver_of("0000:65:00.0").as_deref(), Some("vfio-pci"));
        assert_eq!(h.driver_of("0000:65:00.1").as_deref(), Some("vfio-pci"));
        assert_eq!(h.driver_of("0000:64:01.0").as_deref(), Some("pcieport"));

        let state = BindState::load(root.state_file()).unwrap();
        assert_eq!(
            state.devices,
            vec![
                BoundDevice {
                    address: "0000:65:00.0".into(),
                    iommu_group: 30,
                    original_driver: Some("nouveau".into())
                },
                BoundDevice {
                    address: "0000:65:00.1".into(),
                    iommu_group: 30,
                    original_driver: Some("snd_hda_intel".into())
                },
            ]
        );
        let json: serde_json::Value =
            serde_json::from_str(&fs::read_to_string(root.state_file()).unwrap()).unwrap();
        assert_eq!(json["version"], 1);
        assert_eq!(json["devices"][1]["original_driver"], "snd_hda_intel");

        // Idempotent: a second bind (by id this time) plans nothing and writes nothing.
        let again = bind(&root, &addr("10de:2335"), BindOptions::default(), &mut k).unwrap();
        assert!(again.is_noop());
        assert_eq!(
            again.groups[0].already,
            vec!["0000:65:00.0", "0000:65:00.1"]
        );
        assert_eq!(k.writes.len(), 6);
        assert_eq!(BindState::load(root.state_file()).unwrap(), state);
    }

    #[test]
    fn unbind_restores_the_recorded_drivers() {
        let h = host();
        let root = h.root();
        let mut k = kernel(&h);
        bind(&root, &addr("65:00.1"), BindOptions::default(), &mut k).unwrap();
        let n = k.writes.len();

        // Unbinding one member restores its whole group.
        let done = unbind(&root, &UnbindTarget::Address("0000:65:00.0".into()), &mut k).unwrap();
        assert_eq!(done.len(), 2);
        assert_eq!(
            k.writes[n..n + 3],
            [
                (
                    "bus/pci/devices/0000:65:00.0/driver_override".to_string(),
                    "\n".to_string()
                ),
                (
                    "bus/pci/drivers/vfio-pci/unbind".to_string(),
                    "0000:65:00.0".to_string()
                ),
                (
                    "bus/pci/drivers_probe".to_string(),
                    "0000:65:00.0".to_string()
                ),
            ]
        );
        assert_eq!(h.driver_of("0000:65:00.0").as_deref(), Some("nouveau"));
        assert_eq!(
            h.driver_of("0000:65:00.1").as_deref(),
            Some("snd_hda_intel")
        );
        assert!(!root.state_file().exists());

        // Idempotent: nothing recorded any more.
        assert!(matches!(
            unbind(&root, &UnbindTarget::Address("0000:65:00.0".into()), &mut k),
            Err(HostError::NotRecorded { .. })
        ));
        assert!(unbind(&root, &UnbindTarget::All, &mut k)
            .unwrap()
            .is_empty());
    }

    #[test]
    fn unbind_binds_by_name_when_probe_picks_nothing() {
        let h = host();
        let root = h.root();
        let mut k = kernel(&h);
        bind(&root, &addr("65:00.0"), BindOptions::default(), &mut k).unwrap();
        // The kernel would no longer match nouveau on its own (e.g. a dynamic id): probe
        // leaves the GPU driverless, so unbind binds nouveau by name.
        k.natural.remove("0000:65:00.0");
        unbind(&root, &UnbindTarget::All, &mut k).unwrap();
        assert_eq!(h.driver_of("0000:65:00.0").as_deref(), Some("nouveau"));
        assert!(k.writes.contains(&(
            "bus/pci/drivers/nouveau/bind".to_string(),
            "0000:65:00.0".to_string()
        )));
        assert!(!root.state_file().exists());
    }

    #[test]
    fn refuses_a_mounted_disk_controller_unless_forced() {
        let h = host();
        let root = h.root();
        let mut k = kernel(&h);
        let err = bind(&root, &addr("00:04.0"), BindOptions::default(), &mut k).unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, HostError::InUse { group: 4, .. }), "{msg}");
        assert!(
            msg.contains("0000:00:04.0: nvme0n1p1 is mounted on /"),
            "{msg}"
        );
        assert!(k.writes.is_empty());
        assert_eq!(h.driver_of("0000:00:04.0").as_deref(), Some("nvme"));

        let plan = bind(
            &root,
            &addr("00:04.0"),
            BindOptions {
                count: None,
                force: true,
            },
            &mut k,
        )
        .unwrap();
        assert_eq!(plan.groups[0].forced.len(), 1);
        assert_eq!(h.driver_of("0000:00:04.0").as_deref(), Some("vfio-pci"));
    }

    #[test]
    fn mounts_through_device_mapper_and_swap_count() {
        let h = host();
        // The filesystem is on dm-0, stacked on the partition; swap on dm-1.
        h.file(
            "/proc/self/mountinfo",
            "27 1 253:0 / /home rw - xfs /dev/mapper/vg-home rw\n",
        );
        h.dir("/sys/devices/virtual/block/dm-0/holders");
        h.file("/sys/devices/virtual/block/dm-0/dev", "253:0\n");
        h.file("/sys/devices/virtual/block/dm-1/dev", "253:1\n");
        h.file("/sys/devices/virtual/block/dm-1/dm/name", "vg-swap\n");
        std::os::unix::fs::symlink(
            h.p("/sys/devices/virtual/block/dm-0"),
            h.p("/sys/class/block/dm-0"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            h.p("/sys/devices/virtual/block/dm-1"),
            h.p("/sys/class/block/dm-1"),
        )
        .unwrap();
        let holders = h
            .dev_dir("0000:00:04.0")
            .join("nvme/nvme0/nvme0n1/nvme0n1p1/holders");
        std::os::unix::fs::symlink(h.p("/sys/devices/virtual/block/dm-0"), holders.join("dm-0"))
            .unwrap();
        std::os::unix::fs::symlink(h.p("/sys/devices/virtual/block/dm-1"), holders.join("dm-1"))
            .unwrap();
        h.file(
            "/proc/swaps",
            "Filename\tType\tSize\tUsed\tPriority\n/dev/mapper/vg-swap partition 100 0 -2\n",
        );
        let uses = host_use(&h.root(), "0000:00:04.0").unwrap();
        assert_eq!(
            uses,
            vec![
                "dm-0 (on nvme0n1p1) is mounted on /home",
                "dm-1 (on nvme0n1p1) is active swap"
            ]
        );
    }

    #[test]
    fn refuses_the_default_route_nic_unless_forced() {
        let h = host();
        let root = h.root();
        let err = plan_bind(&root, &addr("00:03.0"), BindOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("0000:00:03.0: eth0 carries the default route"),
            "{err}"
        );
        // A NIC that is only a port of the bridge carrying the route is refused as well.
        h.file(
            "/proc/net/route",
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n\
             br0\t00000000\t010200C0\t0003\t0\t0\t0\t00000000\n",
        );
        h.dir("/sys/devices/virtual/net/br0");
        std::os::unix::fs::symlink(
            h.p("/sys/devices/virtual/net/br0"),
            h.p("/sys/class/net/br0"),
        )
        .unwrap();
        std::os::unix::fs::symlink(
            h.p("/sys/devices/virtual/net/br0"),
            h.dev_dir("0000:00:03.0").join("net/eth0/master"),
        )
        .unwrap();
        let err = plan_bind(&root, &addr("00:03.0"), BindOptions::default()).unwrap_err();
        assert!(
            err.to_string()
                .contains("eth0 is a port of br0, which carries the default route"),
            "{err}"
        );
        // Without a default route on it, it may go.
        h.file(
            "/proc/net/route",
            "Iface\tDestination\tGateway\tFlags\tRefCnt\tUse\tMetric\tMask\n",
        );
        assert!(plan_bind(&root, &addr("00:03.0"), BindOptions::default()).is_ok());
    }

    #[test]
    fn refuses_the_transport_of_a_mounted_shared_filesystem() {
        let h = host();
        // A VM's root over virtio-9p (as in the test rig's L1), and a virtiofs share.
        h.pci("0000:00:08.0", "1af4:1009", 0x000200)
            .driver("virtio-pci")
            .group(8)
            .virtio_9p("virtio1", "host");
        h.pci("0000:00:09.0", "1af4:105a", 0x018000)
            .driver("virtio-pci")
            .group(9);
        h.dir("/sys/devices/pci0000:00/0000:00:09.0/virtio2");
        h.file("/sys/fs/virtiofs/0/tag", "share\n");
        std::os::unix::fs::symlink(
            h.dev_dir("0000:00:09.0").join("virtio2"),
            h.p("/sys/fs/virtiofs/0/device"),
        )
        .unwrap();
        h.file(
            "/proc/self/mountinfo",
            "1 0 0:25 / / ro,relatime - 9p host ro,version=9p2000.L\n\
             2 1 0:26 / /srv rw,relatime shared:5 - virtiofs share rw\n\
             3 1 0:27 / /mnt rw,relatime - 9p host rw,trans=tcp\n",
        );
        let root = h.root();
        let err = plan_bind(&root, &addr("00:08.0"), BindOptions::default()).unwrap_err();
        assert!(matches!(err, HostError::InUse { group: 8, .. }), "{err}");
        assert_eq!(
            host_use(&root, "0000:00:08.0").unwrap(),
            vec!["virtio1 (9p mount tag host) is mounted on /"]
        );
        assert_eq!(
            host_use(&root, "0000:00:09.0").unwrap(),
            vec!["virtio2 (virtiofs mount tag share) is mounted on /srv"]
        );
        // The transport named explicitly counts too.
        h.file(
            "/proc/self/mountinfo",
            "1 0 0:25 / /data rw - 9p host rw,trans=virtio\n",
        );
        assert_eq!(
            host_use(&root, "0000:00:08.0").unwrap(),
            vec!["virtio1 (9p mount tag host) is mounted on /data"]
        );
        // Unmounted (or mounted over another transport), the device may go.
        h.file(
            "/proc/self/mountinfo",
            "3 1 0:27 / /mnt rw,relatime - 9p host rw,trans=tcp\n",
        );
        assert!(plan_bind(&root, &addr("00:08.0"), BindOptions::default()).is_ok());
        assert!(host_use(&root, "0000:00:09.0").unwrap().is_empty());
    }

    #[test]
    fn bind_by_id_with_count() {
        let h = host();
        h.pci("0000:00:05.0", "1b36:0010", 0x010802)
            .driver("nvme")
            .group(6);
        h.pci("0000:00:06.0", "1b36:0010", 0x010802).group(7);
        let root = h.root();
        let id = addr("1b36:0010");
        // 00:04.0 holds /, so two of the three can be bound, not three.
        let err = plan_bind(
            &root,
            &id,
            BindOptions {
                count: Some(3),
                force: false,
            },
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            matches!(err, HostError::NotEnoughToBind { available: 2, .. }),
            "{msg}"
        );
        assert!(
            msg.contains("0000:00:04.0: IOMMU group 4: 0000:00:04.0: nvme0n1p1 is mounted on /"),
            "{msg}"
        );
        let plan = plan_bind(
            &root,
            &id,
            BindOptions {
                count: Some(2),
                force: false,
            },
        )
        .unwrap();
        let groups: Vec<u32> = plan.groups.iter().map(|g| g.group).collect();
        assert_eq!(groups, vec![6, 7]);
        // The driverless one is not unbound from anything.
        assert_eq!(plan.groups[1].moves[0].steps.len(), 2);
        // Without --count, every device of the id: the mounted one refuses the lot.
        assert!(matches!(
            plan_bind(&root, &id, BindOptions::default()),
            Err(HostError::InUse { group: 4, .. })
        ));
        assert!(matches!(
            plan_bind(&root, &addr("dead:beef"), BindOptions::default()),
            Err(HostError::NoMatch { .. })
        ));
    }

    #[test]
    fn no_iommu_no_bind() {
        let h = FakeHost::new();
        h.pci("0000:01:00.0", "10de:2335", 0x030200)
            .driver("nouveau");
        let err = plan_bind(&h.root(), &addr("01:00.0"), BindOptions::default()).unwrap_err();
        assert!(matches!(err, HostError::NoIommuGroup { .. }), "{err}");
        assert!(matches!(
            plan_bind(&h.root(), &addr("02:00.0"), BindOptions::default()),
            Err(HostError::NoDevice { .. })
        ));
    }

    #[test]
    fn bind_failure_is_reported_and_recorded() {
        let h = host();
        let root = h.root();
        h.driver("vfio-pci");
        // A kernel whose vfio-pci does not take the device: probe leaves it driverless.
        struct Refusing<'a>(FakeKernel<'a>);
        impl Kernel for Refusing<'_> {
            fn write(&mut self, path: &Path, value: &str) -> Result<(), HostError> {
                if path.ends_with("drivers_probe") {
                    return Ok(());
                }
                self.0.write(path, value)
            }
            fn modprobe(&mut self, m: &str) -> Result<(), HostError> {
                self.0.modprobe(m)
            }
        }
        let mut k = Refusing(kernel(&h));
        let err = bind(&root, &addr("65:00.0"), BindOptions::default(), &mut k).unwrap_err();
        assert!(
            matches!(&err, HostError::BindFailed { actual, group: 30, .. } if actual == "none"),
            "{err}"
        );
        // The record is there, so unbind can give the GPU back.
        assert_eq!(BindState::load(root.state_file()).unwrap().devices.len(), 2);
        let mut k = kernel(&h);
        unbind(&root, &UnbindTarget::All, &mut k).unwrap();
        assert_eq!(h.driver_of("0000:65:00.0").as_deref(), Some("nouveau"));
        assert_eq!(
            h.driver_of("0000:65:00.1").as_deref(),
            Some("snd_hda_intel")
        );
    }
}
