//! Fake hosts for the unit tests: a sysfs/procfs tree in a temporary directory, and a
//! [`FakeKernel`] that does to that tree what Linux does on driver_override/unbind/bind/probe
//! writes, so bind/unbind run their real code paths end to end.

use std::collections::HashMap;
use std::fs;
use std::io;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use super::bind::Kernel;
use super::sysfs::{link_name, HostRoot};
use super::HostError;

/// The sysfs `resource` of an H200 (`../shared/fixtures/h200/resource`): 16 MiB, 256 GiB and
/// 32 MiB 64-bit prefetchable BARs 0, 2 and 4.
pub const H200_RESOURCE: &str = "\
0x0000104002000000 0x0000104002ffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000100000000000 0x0000103fffffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000104000000000 0x0000104001ffffff 0x000000000014220c
0x0000000000000000 0x0000000000000000 0x0000000000000000
0x0000000000000000 0x0000000000000000 0x0000000000000000
";

/// A temporary directory holding a fake host; removed on drop.
pub struct FakeHost {
    dir: PathBuf,
}

static NEXT: AtomicUsize = AtomicUsize::new(0);

fn w(path: &Path, content: &str) {
    fs::create_dir_all(path.parent().unwrap()).unwrap();
    fs::write(path, content).unwrap();
}

fn link(target: &Path, at: &Path) {
    fs::create_dir_all(at.parent().unwrap()).unwrap();
    let _ = fs::remove_file(at);
    symlink(target, at).unwrap();
}

impl FakeHost {
    /// An empty host: PCI bus with no devices, no IOMMU, nothing in /proc.
    pub fn new() -> FakeHost {
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let dir =
            std::env::temp_dir().join(format!("conduit-host-test-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        for d in [
            "sys/bus/pci/devices",
            "sys/bus/pci/drivers",
            "sys/devices/pci0000:00",
            "sys/kernel/iommu_groups",
            "sys/class/iommu",
            "sys/module",
            "proc/self",
            "dev",
        ] {
            fs::create_dir_all(dir.join(d)).unwrap();
        }
        w(&dir.join("sys/bus/pci/drivers_probe"), "");
        FakeHost { dir }
    }

    /// The root to pass to the code under test.
    pub fn root(&self) -> HostRoot {
        HostRoot::at(&self.dir)
    }

    /// Absolute path of host path `abs` in the tree.
    pub fn p(&self, abs: &str) -> PathBuf {
        self.dir.join(abs.trim_start_matches('/'))
    }

    /// Writes a file.
    pub fn file(&self, abs: &str, content: &str) -> &Self {
        w(&self.p(abs), content);
        self
    }

    /// Makes a directory.
    pub fn dir(&self, abs: &str) -> &Self {
        fs::create_dir_all(self.p(abs)).unwrap();
        self
    }

    /// An IOMMU unit in /sys/class/iommu.
    pub fn iommu(&self, name: &str) -> &Self {
        self.dir(&format!("/sys/class/iommu/{name}"))
    }

    /// A loaded module.
    pub fn module(&self, name: &str) -> &Self {
        self.dir(&format!("/sys/module/{name}"))
    }

    /// A PCI driver directory.
    pub fn driver(&self, name: &str) -> &Self {
        let d = format!("/sys/bus/pci/drivers/{name}");
        self.file(&format!("{d}/bind"), "")
            .file(&format!("{d}/unbind"), "")
    }

    /// The device directory (the target of /sys/bus/pci/devices/ADDR).
    pub fn dev_dir(&self, addr: &str) -> PathBuf {
        self.p(&format!("/sys/devices/pci0000:00/{addr}"))
    }

    /// Adds a PCI device `vvvv:dddd` of class `class`.
    pub fn pci(&self, addr: &str, id: &str, class: u32) -> Pci<'_> {
        let (v, d) = id.split_once(':').unwrap();
        let dd = self.dev_dir(addr);
        w(&dd.join("vendor"), &format!("0x{v}\n"));
        w(&dd.join("device"), &format!("0x{d}\n"));
        w(&dd.join("class"), &format!("0x{class:06x}\n"));
        w(&dd.join("numa_node"), "-1\n");
        w(&dd.join("driver_override"), "(null)\n");
        link(&dd, &self.p(&format!("/sys/bus/pci/devices/{addr}")));
        Pci {
            host: self,
            addr: addr.to_string(),
        }
    }

    /// Binds `addr` to `driver` (the driver directory is created when missing).
    pub fn bind_link(&self, addr: &str, driver: &str) {
        self.driver(driver);
        link(
            &self.p(&format!("/sys/bus/pci/drivers/{driver}")),
            &self.dev_dir(addr).join("driver"),
        );
    }

    /// The driver `addr` is bound to now.
    pub fn driver_of(&self, addr: &str) -> Option<String> {
        link_name(&self.dev_dir(addr).join("driver")).unwrap()
    }
}

impl Drop for FakeHost {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Builder for one fake PCI device.
pub struct Pci<'a> {
    host: &'a FakeHost,
    addr: String,
}

impl Pci<'_> {
    fn d(&self) -> PathBuf {
        self.host.dev_dir(&self.addr)
    }

    /// Bound to `driver`.
    pub fn driver(&self, driver: &str) -> &Self {
        self.host.bind_link(&self.addr, driver);
        self
    }

    /// In IOMMU group `n`.
    pub fn group(&self, n: u32) -> &Self {
        let g = self.host.p(&format!("/sys/kernel/iommu_groups/{n}"));
        fs::create_dir_all(g.join("devices")).unwrap();
        link(&self.d(), &g.join("devices").join(&self.addr));
        link(&g, &self.d().join("iommu_group"));
        self
    }

    /// On NUMA node `n`.
    pub fn numa(&self, n: u32) -> &Self {
        self.numa_raw(&n.to_string())
    }

    /// `numa_node` content.
    pub fn numa_raw(&self, s: &str) -> &Self {
        w(&self.d().join("numa_node"), &format!("{s}\n"));
        self
    }

    /// `resource` content.
    pub fn resource(&self, text: &str) -> &Self {
        w(&self.d().join("resource"), text);
        self
    }

    /// A block device `name` (device number `devnum`) below this device, at `sub/name`
    /// (e.g. `nvme/nvme0`), listed in /sys/class/block.
    pub fn block(&self, sub: &str, name: &str, devnum: &str) -> &Self {
        let b = self.d().join(sub).join(name);
        w(&b.join("dev"), &format!("{devnum}\n"));
        fs::create_dir_all(b.join("holders")).unwrap();
        link(&b, &self.host.p(&format!("/sys/class/block/{name}")));
        self
    }

    /// A virtio-9p transport below this device: virtio device `name` with `mount_tag`.
    pub fn virtio_9p(&self, name: &str, tag: &str) -> &Self {
        let v = self.d().join(name);
        w(&v.join("mount_tag"), &format!("{tag}\0\n"));
        link(&v, &self.host.p(&format!("/sys/bus/virtio/devices/{name}")));
        self
    }

    /// A network interface below this device, listed in /sys/class/net.
    pub fn net(&self, iface: &str) -> &Self {
        let n = self.d().join("net").join(iface);
        fs::create_dir_all(&n).unwrap();
        link(&n, &self.host.p(&format!("/sys/class/net/{iface}")));
        self
    }
}

/// Does to a [`FakeHost`] tree what Linux does on the sysfs writes bind/unbind make.
pub struct FakeKernel<'a> {
    host: &'a FakeHost,
    /// Driver the kernel would pick for a device without driver_override.
    pub natural: HashMap<String, String>,
    /// Every write, as (path below /sys, value).
    pub writes: Vec<(String, String)>,
    /// Every modprobe.
    pub modprobes: Vec<String>,
}

impl<'a> FakeKernel<'a> {
    /// A kernel over `host`.
    pub fn new(host: &'a FakeHost) -> Self {
        FakeKernel {
            host,
            natural: HashMap::new(),
            writes: Vec::new(),
            modprobes: Vec::new(),
        }
    }

    fn err(path: &Path, value: &str, kind: io::ErrorKind) -> HostError {
        HostError::Write {
            path: path.to_path_buf(),
            value: value.to_string(),
            source: io::Error::from(kind),
        }
    }
}

impl Kernel for FakeKernel<'_> {
    fn write(&mut self, path: &Path, value: &str) -> Result<(), HostError> {
        let sys = self.host.p("/sys");
        let rel = path
            .strip_prefix(&sys)
            .map_err(|_| Self::err(path, value, io::ErrorKind::PermissionDenied))?
            .to_string_lossy()
            .into_owned();
        self.writes.push((rel.clone(), value.to_string()));
        let parts: Vec<&str> = rel.split('/').collect();
        let arg = value.trim();
        match parts.as_slice() {
            ["bus", "pci", "devices", addr, "driver_override"] => {
                let v = if arg.is_empty() { "(null)" } else { arg };
                w(
                    &self.host.dev_dir(addr).join("driver_override"),
                    &format!("{v}\n"),
                );
                Ok(())
            }
            ["bus", "pci", "drivers", drv, "unbind"] => {
                if self.host.driver_of(arg).as_deref() != Some(*drv) {
                    return Err(Self::err(path, value, io::ErrorKind::NotFound));
                }
                fs::remove_file(self.host.dev_dir(arg).join("driver")).unwrap();
                Ok(())
            }
            ["bus", "pci", "drivers", drv, "bind"] => {
                if self.host.driver_of(arg).is_some() {
                    return Err(Self::err(path, value, io::ErrorKind::AlreadyExists));
                }
                self.host.bind_link(arg, drv);
                Ok(())
            }
            ["bus", "pci", "drivers_probe"] => {
                if self.host.driver_of(arg).is_some() {
                    return Ok(());
                }
                let ov = fs::read_to_string(self.host.dev_dir(arg).join("driver_override"))
                    .unwrap()
                    .trim()
                    .to_string();
                let pick = if ov != "(null)" {
                    Some(ov)
                } else {
                    self.natural.get(arg).cloned()
                };
                if let Some(d) = pick {
                    if self.host.p(&format!("/sys/bus/pci/drivers/{d}")).exists() {
                        self.host.bind_link(arg, &d);
                    }
                }
                Ok(())
            }
            _ => Err(Self::err(path, value, io::ErrorKind::PermissionDenied)),
        }
    }

    fn modprobe(&mut self, module: &str) -> Result<(), HostError> {
        self.modprobes.push(module.to_string());
        if module == "vfio-pci" {
            self.host.driver("vfio-pci").module("vfio_pci");
        }
        Ok(())
    }
}

/// A host where everything is right: Intel IOMMU on, IR on, modules loaded, an H200 on
/// vfio-pci alone in its group, unlimited memlock, enough hugepages.
pub fn good() -> FakeHost {
    let h = FakeHost::new();
    h.iommu("dmar0").iommu("dmar1");
    h.file("/sys/class/iommu/dmar0/intel-iommu/ecap", "f0205efe78a\n");
    h.file(
        "/proc/cmdline",
        "BOOT_IMAGE=/vmlinuz root=/dev/sda1 intel_iommu=on iommu=pt quiet\n",
    );
    h.file(
        "/proc/interrupts",
        "           CPU0\n 24:  0  IR-PCI-MSI 512000-edge  ahci\n",
    );
    h.file("/proc/cpuinfo", "vendor_id\t: GenuineIntel\n");
    h.module("vfio")
        .module("vfio_pci")
        .module("vfio_iommu_type1");
    h.file("/dev/vfio/vfio", "");
    h.file(
        "/proc/self/limits",
        "Limit                     Soft Limit           Hard Limit           Units\n\
         Max locked memory         unlimited            unlimited            bytes\n",
    );
    h.file("/proc/self/status", "CapEff:\t0000000000000000\n");
    h.file(
        "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
        "1024\n",
    );
    h.file(
        "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
        "1024\n",
    );
    h.pci("0000:17:00.0", "10de:2335", 0x030200)
        .driver("vfio-pci")
        .group(20)
        .numa(0);
    h
}
