//! Host-side checks before a device is opened: it exists, it has an IOMMU group, and every
//! member of the group is bound to vfio-pci or to no driver (PCI bridges aside). A failure
//! names each offending device, its driver and the command that fixes it.

use std::fs;
use std::path::{Path, PathBuf};

/// Why a device cannot be passed through.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum GroupError {
    /// No such PCI device.
    #[error("PCI device {0} does not exist (see `conduit host list --class all`)")]
    NoDevice(String),
    /// The device is in no IOMMU group.
    #[error("PCI device {0} has no IOMMU group: the host IOMMU is off (enable VT-d/AMD-Vi in the firmware and boot with intel_iommu=on or amd_iommu=on; `conduit host check` tells more)")]
    NoGroup(String),
    /// The device itself is not bound to vfio-pci.
    #[error("PCI device {device} (IOMMU group {group}) is bound to {driver}, not vfio-pci: bind its group first: conduit host bind {device}")]
    NotVfio {
        /// The device asked for.
        device: String,
        /// Its group number.
        group: u32,
        /// Its driver, or "no driver".
        driver: String,
    },
    /// Some group members are bound to host drivers.
    #[error("IOMMU group {group} of {device} is not viable: {offenders}; bind the whole group to vfio-pci first: conduit host bind {device}")]
    NotViable {
        /// The device asked for.
        device: String,
        /// Its group number.
        group: u32,
        /// "ADDR (driver X), ..."
        offenders: String,
    },
    /// sysfs could not be read.
    #[error("cannot read {path}: {reason}")]
    Sysfs {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        reason: String,
    },
}

/// A host PCI device that passed the checks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostDevice {
    /// Canonical address, e.g. `0000:00:02.0`.
    pub address: String,
    /// `/sys/bus/pci/devices/ADDRESS`.
    pub sysfs_path: PathBuf,
    /// IOMMU group number.
    pub group: u32,
}

/// Normalises `0000:00:02.0`, `00:02.0` or `/sys/bus/pci/devices/0000:00:02.0` to the sysfs
/// name of the device.
pub fn normalise_address(spec: &str) -> String {
    let name = Path::new(spec)
        .file_name()
        .and_then(|n| n.to_str())
        .unwrap_or(spec);
    if name.matches(':').count() == 1 {
        format!("0000:{name}")
    } else {
        name.to_string()
    }
}

fn link_name(path: &Path) -> Option<String> {
    fs::read_link(path)
        .ok()?
        .file_name()?
        .to_str()
        .map(str::to_string)
}

/// Checks `spec` under `sys_pci_devices` (normally `/sys/bus/pci/devices`).
pub fn check(sys_pci_devices: &Path, spec: &str) -> Result<HostDevice, GroupError> {
    let address = normalise_address(spec);
    let sysfs_path = sys_pci_devices.join(&address);
    if !sysfs_path.exists() {
        return Err(GroupError::NoDevice(address));
    }
    let group_link = sysfs_path.join("iommu_group");
    let group: u32 = link_name(&group_link)
        .and_then(|g| g.parse().ok())
        .ok_or_else(|| GroupError::NoGroup(address.clone()))?;
    let members_dir = group_link.join("devices");
    let members = fs::read_dir(&members_dir).map_err(|e| GroupError::Sysfs {
        path: members_dir.clone(),
        reason: e.to_string(),
    })?;
    let mut offenders = Vec::new();
    let mut names: Vec<String> = members
        .filter_map(|m| {
            m.ok()
                .and_then(|m| m.file_name().to_str().map(str::to_string))
        })
        .collect();
    names.sort();
    for member in names {
        let dir = sys_pci_devices.join(&member);
        let class = fs::read_to_string(dir.join("class")).unwrap_or_default();
        if class.trim().starts_with("0x0604") {
            continue; // PCI bridges may stay with their driver
        }
        match link_name(&dir.join("driver")).as_deref() {
            None | Some("vfio-pci") => {}
            Some(driver) => offenders.push(format!("{member} (driver {driver})")),
        }
    }
    if !offenders.is_empty() {
        return Err(GroupError::NotViable {
            device: address,
            group,
            offenders: offenders.join(", "),
        });
    }
    match link_name(&sysfs_path.join("driver")).as_deref() {
        Some("vfio-pci") => {}
        other => {
            return Err(GroupError::NotVfio {
                device: address,
                group,
                driver: other.map_or("no driver".into(), |d| format!("driver {d}")),
            })
        }
    }
    Ok(HostDevice {
        address,
        sysfs_path,
        group,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct FakeSys(PathBuf);

    impl FakeSys {
        fn new(name: &str) -> Self {
            let root =
                std::env::temp_dir().join(format!("conduit-grp-{}-{name}", std::process::id()));
            let _ = fs::remove_dir_all(&root);
            fs::create_dir_all(root.join("devices")).unwrap();
            fs::create_dir_all(root.join("groups")).unwrap();
            fs::create_dir_all(root.join("drivers/nvme")).unwrap();
            fs::create_dir_all(root.join("drivers/vfio-pci")).unwrap();
            FakeSys(root)
        }
        fn device(&self, addr: &str, class: &str, group: u32, driver: Option<&str>) {
            let d = self.0.join("devices").join(addr);
            fs::create_dir_all(&d).unwrap();
            fs::write(d.join("class"), format!("{class}\n")).unwrap();
            let g = self.0.join("groups").join(group.to_string());
            fs::create_dir_all(g.join("devices")).unwrap();
            let _ = symlink(&d, g.join("devices").join(addr));
            let _ = symlink(&g, d.join("iommu_group"));
            if let Some(drv) = driver {
                symlink(self.0.join("drivers").join(drv), d.join("driver")).unwrap();
            }
        }
        fn devices(&self) -> PathBuf {
            self.0.join("devices")
        }
    }

    impl Drop for FakeSys {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn viable_group_passes_and_addresses_normalise() {
        let sys = FakeSys::new("ok");
        sys.device("0000:00:02.0", "0x010802", 3, Some("vfio-pci"));
        sys.device("0000:00:01.0", "0x060400", 3, Some("pcieport"));
        let d = check(&sys.devices(), "00:02.0").unwrap();
        assert_eq!(d.address, "0000:00:02.0");
        assert_eq!(d.group, 3);
        let d = check(&sys.devices(), "/sys/bus/pci/devices/0000:00:02.0").unwrap();
        assert_eq!(d.sysfs_path, sys.devices().join("0000:00:02.0"));
    }

    #[test]
    fn host_driver_in_group_is_named_with_the_fix() {
        let sys = FakeSys::new("bad");
        sys.device("0000:00:02.0", "0x010802", 4, Some("vfio-pci"));
        sys.device("0000:00:02.1", "0x010802", 4, Some("nvme"));
        let e = check(&sys.devices(), "0000:00:02.0").unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("IOMMU group 4"), "{msg}");
        assert!(msg.contains("0000:00:02.1 (driver nvme)"), "{msg}");
        assert!(msg.contains("conduit host bind 0000:00:02.0"), "{msg}");
    }

    #[test]
    fn the_device_itself_must_be_on_vfio_pci() {
        let sys = FakeSys::new("unbound");
        sys.device("0000:00:03.0", "0x010802", 5, None);
        let e = check(&sys.devices(), "0000:00:03.0").unwrap_err();
        assert_eq!(
            e.to_string(),
            "PCI device 0000:00:03.0 (IOMMU group 5) is bound to no driver, not vfio-pci: bind its group first: conduit host bind 0000:00:03.0"
        );
    }

    #[test]
    fn missing_device_and_missing_group() {
        let sys = FakeSys::new("missing");
        assert_eq!(
            check(&sys.devices(), "0000:00:09.0"),
            Err(GroupError::NoDevice("0000:00:09.0".into()))
        );
        fs::create_dir_all(sys.devices().join("0000:00:05.0")).unwrap();
        assert!(matches!(
            check(&sys.devices(), "0000:00:05.0"),
            Err(GroupError::NoGroup(_))
        ));
    }
}
