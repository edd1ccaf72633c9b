//! Is this host ready for VFIO passthrough? (`conduit host check`)
//!
//! Each [`Finding`] is pass, warn or fail; every warn and fail carries the exact fix. The host
//! is ready when nothing fails. What is read, and why:
//!
//! - IOMMU: units in `/sys/class/iommu` (dmar* = Intel VT-d, ivhd* = AMD-Vi) and groups in
//!   `/sys/kernel/iommu_groups` (groups exist only when the kernel uses the IOMMU).
//! - Interrupt remapping: interrupt chips named `IR-*` in `/proc/interrupts` (the kernel
//!   names them so only when remapping is on); failing that, bit 3 (IR) of each Intel unit's
//!   extended capability register, `/sys/class/iommu/dmar*/intel-iommu/ecap`, says whether
//!   the hardware has it. AMD exposes no such bit in sysfs: without `IR-*` chips, warn.
//! - Kernel command line (`/proc/cmdline`, before `--`): `intel_iommu=`/`amd_iommu=`,
//!   `iommu=`, `intremap=`.
//! - Modules: `/sys/module/NAME` (loaded or built in), else `/lib/modules/RELEASE/modules.dep`
//!   and `modules.builtin` (loadable).
//! - `/dev/vfio/vfio`, `/dev/iommu`.
//! - Memlock: `/proc/self/limits` and `CapEff` in `/proc/self/status` (VFIO does not count
//!   pinned pages against RLIMIT_MEMLOCK for a process with CAP_IPC_LOCK).
//! - `/sys/kernel/mm/hugepages/hugepages-2048kB/{free,nr}_hugepages`.
//! - NVIDIA GPUs (vendor 0x10de, class 0x03) and the devices already on vfio-pci: their
//!   driver and their IOMMU group's composition.

use std::collections::BTreeSet;

use serde::Serialize;

use super::inventory::{fmt_size, Inventory, PciDevice, VFIO_DRIVER};
use super::names::PciNames;
use super::sysfs::{exists, list_dir, read_opt, HostRoot};
use super::HostError;

/// Outcome of one check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fine.
    Pass,
    /// Works, but worth fixing (or could not be confirmed).
    Warn,
    /// Passthrough cannot work until fixed.
    Fail,
}

impl Status {
    /// `pass`, `warn`, `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One line of `conduit host check`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Stable name of the check: `iommu`, `interrupt-remapping`, `cmdline-iommu`,
    /// `cmdline-iommu-pt`, `module-vfio`, `module-vfio-pci`, `vfio-dma-backend`, `dev-vfio`,
    /// `memlock`, `hugepages`, `gpu-driver`, `iommu-group`.
    pub check: &'static str,
    /// Result.
    pub status: Status,
    /// The device this is about, if any.
    pub device: Option<String>,
    /// What was found.
    pub message: String,
    /// How to fix it (warn and fail only).
    pub fix: Option<String>,
}

impl Finding {
    fn pass(check: &'static str, message: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Pass,
            device: None,
            message: message.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Warn,
            device: None,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn fail(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Finding {
            check,
            status: Status::Fail,
            device: None,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }

    fn on(mut self, device: &str) -> Self {
        self.device = Some(device.to_string());
        self
    }

    /// `fail  check: message; fix: ...` on one line.
    pub fn line(&self) -> String {
        let mut s = format!("{}  {}: {}", self.status.as_str(), self.check, self.message);
        if let Some(f) = &self.fix {
            s.push_str(" -- fix: ");
            s.push_str(f);
        }
        s
    }
}

/// All findings.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// Nothing failed.
    pub ready: bool,
    /// Guest memory the memlock check used, in bytes.
    pub memory: u64,
    /// In check order.
    pub findings: Vec<Finding>,
}

impl Report {
    /// The text output: one line per finding, then a verdict.
    pub fn text(&self) -> String {
        let mut s = String::new();
        for f in &self.findings {
            s.push_str(&f.line());
            s.push('\n');
        }
        let count = |st| self.findings.iter().filter(|f| f.status == st).count();
        if self.ready {
            s.push_str(&format!(
                "ready for passthrough ({} warning(s))\n",
                count(Status::Warn)
            ));
        } else {
            s.push_str(&format!(
                "NOT ready for passthrough: {} failed, {} warning(s)\n",
                count(Status::Fail),
                count(Status::Warn)
            ));
        }
        s
    }
}

/// Options of `check`.
#[derive(Debug, Clone, Copy)]
pub struct CheckOptions {
    /// Guest memory that will be pinned, in bytes.
    pub memory: u64,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions { memory: 1 << 30 }
    }
}

/// Which IOMMU the host has, for the wording of fixes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Vendor {
    Intel,
    Amd,
    Unknown,
}

impl Vendor {
    fn param(self) -> &'static str {
        match self {
            Vendor::Intel => "intel_iommu=on",
            Vendor::Amd => "amd_iommu=on",
            Vendor::Unknown => "intel_iommu=on (Intel) or amd_iommu=on (AMD)",
        }
    }

    fn firmware(self) -> &'static str {
        match self {
            Vendor::Intel => "VT-d",
            Vendor::Amd => "AMD-Vi (often called IOMMU)",
            Vendor::Unknown => "VT-d (Intel) or AMD-Vi (AMD)",
        }
    }
}

const GRUB: &str = "in GRUB_CMDLINE_LINUX of /etc/default/grub, then update-grub or \
grub2-mkconfig -o /boot/grub2/grub.cfg, and reboot";

/// What the host has, read once.
struct Host {
    units: Vec<String>,
    groups: usize,
    cmdline: Vec<String>,
    vendor: Vendor,
}

impl Host {
    fn read(root: &HostRoot) -> Result<Host, HostError> {
        let units = list_dir(&root.path("/sys/class/iommu"))?;
        let groups = list_dir(&root.path("/sys/kernel/iommu_groups"))?.len();
        let cmdline: Vec<String> = read_opt(&root.path("/proc/cmdline"))?
            .unwrap_or_default()
            .split_whitespace()
            .take_while(|t| *t != "--")
            .map(str::to_string)
            .collect();
        let vendor = if units.iter().any(|u| u.starts_with("dmar")) {
            Vendor::Intel
        } else if units.iter().any(|u| u.starts_with("ivhd")) {
            Vendor::Amd
        } else {
            let cpuinfo = read_opt(&root.path("/proc/cpuinfo"))?.unwrap_or_default();
            if cpuinfo.contains("GenuineIntel") {
                Vendor::Intel
            } else if cpuinfo.contains("AuthenticAMD") {
                Vendor::Amd
            } else {
                Vendor::Unknown
            }
        };
        Ok(Host {
            units,
            groups,
            cmdline,
            vendor,
        })
    }

    fn has(&self, token: &str) -> bool {
        self.cmdline.iter().any(|t| t == token)
    }

    fn iommu_on(&self) -> bool {
        self.groups > 0
    }

    fn no_iommu(&self) -> bool {
        self.units.is_empty() && self.groups == 0
    }

    fn enable_fix(&self) -> String {
        format!(
            "enable {} in the firmware (BIOS/UEFI) setup, add `{} iommu=pt` to the kernel \
             command line ({GRUB})",
            self.vendor.firmware(),
            self.vendor.param()
        )
    }
}

/// Runs every check.
pub fn check(root: &HostRoot, opts: CheckOptions) -> Result<Report, HostError> {
    let host = Host::read(root)?;
    let mut f = vec![
        iommu(&host),
        interrupt_remapping(root, &host)?,
        cmdline_iommu(&host),
        cmdline_pt(&host),
    ];
    f.extend(modules(root)?);
    f.push(dev_vfio(root));
    f.push(memlock(root, opts.memory)?);
    f.push(hugepages(root, opts.memory)?);
    f.extend(devices(root)?);
    Ok(Report {
        ready: f.iter().all(|x| x.status != Status::Fail),
        memory: opts.memory,
        findings: f,
    })
}

fn unit_kind(u: &str) -> &'static str {
    if u.starts_with("dmar") {
        "Intel VT-d"
    } else if u.starts_with("ivhd") {
        "AMD-Vi"
    } else if u.starts_with("virtio") {
        "virtio-iommu"
    } else {
        "IOMMU"
    }
}

fn iommu(h: &Host) -> Finding {
    const C: &str = "iommu";
    let units = h
        .units
        .iter()
        .map(|u| format!("{u} ({})", unit_kind(u)))
        .collect::<Vec<_>>()
        .join(", ");
    match (h.units.is_empty(), h.iommu_on()) {
        (true, false) => Finding::fail(
            C,
            "there is no IOMMU on this host (/sys/class/iommu is empty, no IOMMU groups): no \
             device can be passed through, because VFIO needs the IOMMU to confine a device's \
             DMA to its guest's memory",
            h.enable_fix(),
        ),
        (false, false) => Finding::fail(
            C,
            format!(
                "IOMMU hardware is present ({units}) but the kernel does not use it: there are \
                 no IOMMU groups, so no device can be passed through"
            ),
            format!(
                "add `{} iommu=pt` to the kernel command line ({GRUB})",
                h.vendor.param()
            ),
        ),
        (true, true) => Finding::warn(
            C,
            format!(
                "{} IOMMU groups but no unit in /sys/class/iommu (VFIO no-IOMMU mode?): devices \
                 would not be isolated",
                h.groups
            ),
            h.enable_fix(),
        ),
        (false, true) => Finding::pass(C, format!("IOMMU on: {units}; {} IOMMU groups", h.groups)),
    }
}

/// Bit 3 of the VT-d extended capability register: interrupt remapping supported.
const ECAP_IR: u64 = 1 << 3;

fn interrupt_remapping(root: &HostRoot, h: &Host) -> Result<Finding, HostError> {
    const C: &str = "interrupt-remapping";
    let unsafe_fix = "none in software; as an unsafe last resort (a guest could inject host \
                      interrupts) load vfio_iommu_type1 with allow_unsafe_interrupts=1";
    if h.no_iommu() {
        return Ok(Finding::fail(
            C,
            "not available: interrupt remapping is part of the IOMMU, and there is none",
            "turn the IOMMU on (see the iommu finding)",
        ));
    }
    if let Some(t) = h
        .cmdline
        .iter()
        .find(|t| *t == "intremap=off" || *t == "nointremap")
    {
        return Ok(Finding::fail(
            C,
            format!("turned off by `{t}` on the kernel command line"),
            format!("remove `{t}` from the kernel command line ({GRUB})"),
        ));
    }
    let interrupts = read_opt(&root.path("/proc/interrupts"))?.unwrap_or_default();
    if interrupts.split_whitespace().any(|w| w.starts_with("IR-")) {
        return Ok(Finding::pass(
            C,
            "on (interrupt chips named IR-* in /proc/interrupts)",
        ));
    }
    let mut lacking = Vec::new();
    let mut known = 0;
    for u in h.units.iter().filter(|u| u.starts_with("dmar")) {
        let p = root
            .path("/sys/class/iommu")
            .join(u)
            .join("intel-iommu/ecap");
        if let Some(text) = read_opt(&p)? {
            let ecap = super::sysfs::parse_hex(&p, &text, "a VT-d ECAP register")?;
            known += 1;
            if ecap & ECAP_IR == 0 {
                lacking.push(u.clone());
            }
        }
    }
    Ok(if !lacking.is_empty() {
        Finding::fail(
            C,
            format!(
                "the hardware lacks it (ECAP bit 3 clear on {}): VFIO refuses devices whose \
                 interrupts cannot be isolated",
                lacking.join(", ")
            ),
            unsafe_fix,
        )
    } else if known > 0 {
        Finding::warn(
            C,
            "supported by every VT-d unit (ECAP bit 3) but no IR-* interrupt chip in \
             /proc/interrupts: probably turned off",
            "check `dmesg | grep -i remapping`; x2APIC and interrupt remapping must not be \
             disabled in the firmware setup",
        )
    } else {
        Finding::warn(
            C,
            "could not confirm: no IR-* interrupt chip in /proc/interrupts and no VT-d ECAP \
             register to read",
            "check `dmesg | grep -i remapping` for \"Enabled IRQ remapping\"",
        )
    })
}

fn cmdline_iommu(h: &Host) -> Finding {
    const C: &str = "cmdline-iommu";
    for off in ["intel_iommu=off", "amd_iommu=off", "iommu=off"] {
        if h.has(off) {
            return Finding::fail(
                C,
                format!("`{off}` on the kernel command line turns the IOMMU off"),
                format!(
                    "replace `{off}` with `{} iommu=pt` on the kernel command line ({GRUB})",
                    h.vendor.param()
                ),
            );
        }
    }
    let present: Vec<&str> = ["intel_iommu=on", "amd_iommu=on", "amd_iommu=force_enable"]
        .into_iter()
        .filter(|t| h.has(t))
        .collect();
    if !present.is_empty() {
        Finding::pass(
            C,
            format!("`{}` on the kernel command line", present.join(" ")),
        )
    } else if h.iommu_on() {
        Finding::pass(
            C,
            format!(
                "no `{}` on the kernel command line, but the kernel turned the IOMMU on by default",
                h.vendor.param()
            ),
        )
    } else {
        Finding::fail(
            C,
            format!("no `{}` on the kernel command line", h.vendor.param()),
            format!(
                "add `{} iommu=pt` to the kernel command line ({GRUB})",
                h.vendor.param()
            ),
        )
    }
}

fn cmdline_pt(h: &Host) -> Finding {
    const C: &str = "cmdline-iommu-pt";
    if h.has("iommu=pt") {
        Finding::pass(C, "`iommu=pt` on the kernel command line")
    } else {
        Finding::warn(
            C,
            "no `iommu=pt` on the kernel command line (recommended: devices the host keeps skip \
             DMA translation)",
            format!("add `iommu=pt` to the kernel command line ({GRUB})"),
        )
    }
}

/// Where a module stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Module {
    /// In /sys/module (loaded, or built in with parameters).
    Loaded,
    /// Listed in modules.dep or modules.builtin.
    Available,
    /// Not listed.
    Missing,
    /// No modules directory to look in.
    Unknown,
}

/// Module lists of the running kernel.
struct Modules {
    names: Option<BTreeSet<String>>,
    dir: String,
}

impl Modules {
    fn read(root: &HostRoot) -> Result<Modules, HostError> {
        let release = read_opt(&root.path("/proc/sys/kernel/osrelease"))?.unwrap_or_default();
        let mut names = None;
        let mut dir = format!("/lib/modules/{release}");
        for base in ["/lib/modules", "/usr/lib/modules"] {
            let d = format!("{base}/{release}");
            let dep = read_opt(&root.path(&format!("{d}/modules.dep")))?;
            let builtin = read_opt(&root.path(&format!("{d}/modules.builtin")))?;
            if dep.is_none() && builtin.is_none() {
                continue;
            }
            let mut set = BTreeSet::new();
            for line in dep.iter().chain(builtin.iter()).flat_map(|t| t.lines()) {
                let path = line.split(':').next().unwrap_or("");
                let file = path.rsplit('/').next().unwrap_or("");
                if let Some(name) = file.split(".ko").next().filter(|n| !n.is_empty()) {
                    set.insert(name.replace('-', "_"));
                }
            }
            names = Some(set);
            dir = d;
            break;
        }
        Ok(Modules { names, dir })
    }

    fn state(&self, root: &HostRoot, name: &str) -> Module {
        if exists(&root.path(&format!("/sys/module/{name}"))) {
            Module::Loaded
        } else {
            match &self.names {
                Some(set) if set.contains(name) => Module::Available,
                Some(_) => Module::Missing,
                None => Module::Unknown,
            }
        }
    }
}

fn modules(root: &HostRoot) -> Result<Vec<Finding>, HostError> {
    let m = Modules::read(root)?;
    let one = |check: &'static str, name: &str, modprobe: &str, config: &str| {
        match m.state(root, name) {
        Module::Loaded => Finding::pass(check, format!("{name} is loaded")),
        Module::Available => Finding::warn(
            check,
            format!("{name} is not loaded (available in {})", m.dir),
            format!("modprobe {modprobe}"),
        ),
        Module::Missing => Finding::fail(
            check,
            format!("{name} is neither loaded nor in {}", m.dir),
            format!("use a kernel built with {config}"),
        ),
        Module::Unknown => Finding::fail(
            check,
            format!("{name} is not loaded, and there is no {} to load it from", m.dir),
            format!("install this kernel's modules and run `modprobe {modprobe}`, or use a kernel built with {config}"),
        ),
    }
    };
    let mut out = vec![one("module-vfio", "vfio", "vfio", "CONFIG_VFIO")];
    let mut pci = one("module-vfio-pci", "vfio_pci", "vfio-pci", "CONFIG_VFIO_PCI");
    if pci.status == Status::Warn {
        pci.fix = Some("modprobe vfio-pci (`conduit host bind` does it)".to_string());
    }
    out.push(pci);

    const C: &str = "vfio-dma-backend";
    let type1 = m.state(root, "vfio_iommu_type1");
    let iommufd = m.state(root, "iommufd");
    let dev_iommu = exists(&root.path("/dev/iommu"));
    out.push(if type1 == Module::Loaded || iommufd == Module::Loaded || dev_iommu {
        let mut have = Vec::new();
        if type1 == Module::Loaded {
            have.push("vfio_iommu_type1");
        }
        if iommufd == Module::Loaded || dev_iommu {
            have.push("iommufd");
        }
        Finding::pass(C, format!("{} available", have.join(" and ")))
    } else if type1 == Module::Available || iommufd == Module::Available {
        let which = if type1 == Module::Available {
            "vfio_iommu_type1"
        } else {
            "iommufd"
        };
        Finding::warn(
            C,
            format!("neither vfio_iommu_type1 nor iommufd is loaded ({which} is available)"),
            format!("modprobe {which}"),
        )
    } else {
        Finding::fail(
            C,
            "neither vfio_iommu_type1 nor iommufd is loaded or available: VFIO cannot map guest memory",
            "use a kernel built with CONFIG_VFIO_IOMMU_TYPE1 or CONFIG_IOMMUFD, then `modprobe vfio_iommu_type1`",
        )
    });
    Ok(out)
}

fn dev_vfio(root: &HostRoot) -> Finding {
    const C: &str = "dev-vfio";
    if exists(&root.path("/dev/vfio/vfio")) {
        Finding::pass(C, "/dev/vfio/vfio is present")
    } else if exists(&root.path("/dev/iommu")) {
        Finding::warn(
            C,
            "/dev/vfio/vfio is missing (no legacy VFIO container); /dev/iommu (iommufd) is present",
            "modprobe vfio (with CONFIG_VFIO_CONTAINER or CONFIG_IOMMUFD_VFIO_CONTAINER)",
        )
    } else {
        Finding::fail(
            C,
            "/dev/vfio/vfio is missing",
            "modprobe vfio vfio_iommu_type1 (creates /dev/vfio/vfio)",
        )
    }
}

/// Parses a `/proc/self/limits` value: `unlimited` or a number of bytes.
fn limit(s: &str) -> Option<Option<u64>> {
    if s == "unlimited" {
        Some(None)
    } else {
        s.parse().ok().map(Some)
    }
}

const CAP_IPC_LOCK: u64 = 1 << 14;

/// Why this process cannot pin `memory` bytes for VFIO (RLIMIT_MEMLOCK without
/// CAP_IPC_LOCK), with the fix; `None` when it can (or the limit cannot be read).
pub fn memlock_refusal(memory: u64) -> Option<String> {
    let f = memlock(&HostRoot::system(), memory).ok()?;
    (f.status == Status::Fail).then(|| format!("{}: {}", f.message, f.fix.unwrap_or_default()))
}

fn memlock(root: &HostRoot, memory: u64) -> Result<Finding, HostError> {
    const C: &str = "memlock";
    let limits = read_opt(&root.path("/proc/self/limits"))?.unwrap_or_default();
    let line = limits.lines().find(|l| l.starts_with("Max locked memory"));
    let fields: Vec<&str> = line
        .map(|l| l["Max locked memory".len()..].split_whitespace().collect())
        .unwrap_or_default();
    let (Some(soft), Some(hard)) = (
        fields.first().and_then(|s| limit(s)),
        fields.get(1).and_then(|s| limit(s)),
    ) else {
        return Ok(Finding::warn(
            C,
            "could not read RLIMIT_MEMLOCK from /proc/self/limits",
            "check `ulimit -l`: it must allow the whole guest memory (or unlimited)",
        ));
    };
    let want = fmt_size(memory);
    let Some(soft) = soft else {
        return Ok(Finding::pass(
            C,
            format!("RLIMIT_MEMLOCK is unlimited (guest memory to pin: {want})"),
        ));
    };
    if soft >= memory {
        return Ok(Finding::pass(
            C,
            format!("RLIMIT_MEMLOCK is {}, enough to pin {want}", fmt_size(soft)),
        ));
    }
    let status = read_opt(&root.path("/proc/self/status"))?.unwrap_or_default();
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        .unwrap_or(0);
    if cap_eff & CAP_IPC_LOCK != 0 {
        return Ok(Finding::pass(
            C,
            format!(
                "RLIMIT_MEMLOCK is {} (below the {want} to pin), but this process has \
                 CAP_IPC_LOCK, so VFIO does not enforce it (run conduit the same way)",
                fmt_size(soft)
            ),
        ));
    }
    let kib = memory.div_ceil(1024);
    let fix = if hard.is_none_or(|h| h >= memory) {
        format!("`ulimit -l {kib}` (or `ulimit -l unlimited`) in the shell that starts conduit")
    } else {
        format!(
            "raise the hard limit too: `<user> - memlock unlimited` in /etc/security/limits.conf \
             (log in again), or `LimitMEMLOCK=infinity` in the systemd unit, then `ulimit -l {kib}`"
        )
    };
    Ok(Finding::fail(
        C,
        format!(
            "RLIMIT_MEMLOCK is {}, too low to pin {want} of guest memory (VFIO pins all of it)",
            fmt_size(soft)
        ),
        fix,
    ))
}

fn hugepages(root: &HostRoot, memory: u64) -> Result<Finding, HostError> {
    const C: &str = "hugepages";
    let dir = "/sys/kernel/mm/hugepages/hugepages-2048kB";
    let read_n = |name: &str| -> Result<Option<u64>, HostError> {
        Ok(read_opt(&root.path(&format!("{dir}/{name}")))?.and_then(|s| s.parse().ok()))
    };
    let (Some(free), Some(total)) = (read_n("free_hugepages")?, read_n("nr_hugepages")?) else {
        return Ok(Finding::warn(
            C,
            "no 2 MiB hugepage support (only needed for `run --hugepages`)",
            "use a kernel built with CONFIG_HUGETLBFS",
        ));
    };
    let need = memory.div_ceil(2 << 20);
    if free >= need {
        Ok(Finding::pass(
            C,
            format!(
                "{free} free 2 MiB hugepages ({}), enough for `run --hugepages`",
                fmt_size(free * (2 << 20))
            ),
        ))
    } else {
        Ok(Finding::warn(
            C,
            format!(
                "{free} free 2 MiB hugepages, {need} needed for {} with `run --hugepages` (not needed otherwise)",
                fmt_size(memory)
            ),
            format!("echo {} > {dir}/nr_hugepages", total + (need - free)),
        ))
    }
}

fn devices(root: &HostRoot) -> Result<Vec<Finding>, HostError> {
    let inv = Inventory::read(root)?;
    let names = PciNames::load(root);
    let label = |d: &PciDevice| match names.lookup(d.id) {
        Some(n) => format!("{} ({} {})", d.address, d.id, n),
        None => format!("{} ({})", d.address, d.id),
    };
    let mut out = Vec::new();
    let gpus: Vec<&PciDevice> = inv.devices.iter().filter(|d| d.is_nvidia_gpu()).collect();
    const G: &str = "gpu-driver";
    if gpus.is_empty() {
        out.push(Finding::warn(
            G,
            "no NVIDIA GPU on this host: nothing of that kind to pass through (other devices can \
             still be bound by address)",
            "`conduit host list --class all` shows every PCI device",
        ));
    }
    for d in &gpus {
        let l = label(d);
        let permanent = format!(
            "for every boot, add `vfio-pci.ids={}` to the kernel command line and `echo 'softdep \
             nouveau pre: vfio-pci' > /etc/modprobe.d/conduit-vfio.conf`",
            d.id
        );
        let f = match d.driver.as_deref() {
            Some(VFIO_DRIVER) => Finding::pass(G, format!("{l} is bound to vfio-pci")),
            Some(drv @ ("nouveau" | "nvidia" | "nvidia_drm" | "nvidiafb")) => Finding::fail(
                G,
                format!("{l} is held by the host GPU driver {drv}"),
                format!(
                    "`conduit host bind {}` now (no reboot); {}; or `echo 'blacklist {drv}' >> \
                     /etc/modprobe.d/conduit-vfio.conf`",
                    d.address, permanent
                ),
            ),
            Some(drv) => Finding::warn(
                G,
                format!("{l} is bound to {drv}, not vfio-pci"),
                format!("`conduit host bind {}`", d.address),
            ),
            None => Finding::warn(
                G,
                format!("{l} is bound to no driver"),
                format!("`conduit host bind {}`", d.address),
            ),
        };
        out.push(f.on(&d.address));
    }

    // Group composition for every device meant for passthrough: the NVIDIA GPUs and whatever
    // is already on vfio-pci. GPU drivers are reported above, so they are not repeated here.
    const I: &str = "iommu-group";
    let mut seen = BTreeSet::new();
    for d in inv
        .devices
        .iter()
        .filter(|d| d.is_nvidia_gpu() || d.on_vfio())
    {
        let Some(g) = d.iommu_group else {
            out.push(
                Finding::fail(
                    I,
                    format!("{} is in no IOMMU group", label(d)),
                    "turn the IOMMU on (see the iommu check)",
                )
                .on(&d.address),
            );
            continue;
        };
        if !seen.insert(g) {
            continue;
        }
        let members = inv.members(g).join(", ");
        let all_blockers = inv.group_blockers(g);
        let blockers: Vec<String> = all_blockers
            .iter()
            .filter(|(m, _)| !inv.get(m).is_some_and(PciDevice::is_nvidia_gpu))
            .map(|(m, drv)| format!("{m} is bound to {drv}"))
            .collect();
        let f = if blockers.is_empty() {
            let how = if all_blockers.is_empty() {
                "is viable"
            } else {
                "will be viable once its GPUs are on vfio-pci (see gpu-driver)"
            };
            Finding::pass(
                I,
                format!("IOMMU group {g} of {} {how}: {members}", d.address),
            )
        } else {
            Finding::fail(
                I,
                format!(
                    "IOMMU group {g} of {} is not viable ({members}): {}",
                    d.address,
                    blockers.join("; ")
                ),
                format!(
                    "`conduit host bind {}` moves the whole group to vfio-pci; a member the host \
                     must keep means the card needs a slot with its own IOMMU group",
                    d.address
                ),
            )
        };
        out.push(f.on(&d.address));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::testutil::{good, FakeHost};
    use super::*;

    fn run(h: &FakeHost) -> Report {
        check(&h.root(), CheckOptions::default()).unwrap()
    }

    fn get<'a>(r: &'a Report, check: &str) -> &'a Finding {
        r.findings
            .iter()
            .find(|f| f.check == check)
            .unwrap_or_else(|| panic!("no {check} finding in {:#?}", r.findings))
    }

    #[test]
    fn a_good_host_is_ready() {
        let r = run(&good());
        assert!(r.ready, "{}", r.text());
        for f in &r.findings {
            assert_eq!(f.status, Status::Pass, "{}", f.line());
            assert!(f.fix.is_none());
        }
        assert!(get(&r, "iommu")
            .message
            .contains("dmar0 (Intel VT-d), dmar1 (Intel VT-d); 1 IOMMU groups"));
        assert!(get(&r, "interrupt-remapping").message.contains("IR-*"));
        assert!(get(&r, "gpu-driver")
            .message
            .contains("NVIDIA H200) is bound to vfio-pci"));
        assert!(get(&r, "iommu-group")
            .message
            .contains("IOMMU group 20 of 0000:17:00.0 is viable"));
        assert!(r.text().ends_with("ready for passthrough (0 warning(s))\n"));
    }

    #[test]
    fn no_iommu_says_so_plainly() {
        let h = FakeHost::new();
        h.file("/proc/cmdline", "console=ttyS0 quiet -- intel_iommu=on\n");
        h.file("/proc/cpuinfo", "vendor_id\t: AuthenticAMD\n");
        let r = run(&h);
        assert!(!r.ready);
        let f = get(&r, "iommu");
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.message.contains("there is no IOMMU on this host"),
            "{}",
            f.message
        );
        assert!(f.message.contains("no device can be passed through"));
        let fix = f.fix.as_deref().unwrap();
        assert!(
            fix.contains("AMD-Vi") && fix.contains("amd_iommu=on iommu=pt"),
            "{fix}"
        );
        assert_eq!(get(&r, "interrupt-remapping").status, Status::Fail);
        // An `intel_iommu=on` after `--` goes to init, not to the kernel.
        let c = get(&r, "cmdline-iommu");
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("no `amd_iommu=on`"));
        assert_eq!(get(&r, "cmdline-iommu-pt").status, Status::Warn);
        assert!(r.text().contains("NOT ready for passthrough"));
    }

    #[test]
    fn iommu_present_but_no_groups() {
        let h = good();
        std::fs::remove_dir_all(h.p("/sys/kernel/iommu_groups")).unwrap();
        std::fs::remove_file(h.dev_dir("0000:17:00.0").join("iommu_group")).unwrap();
        h.file("/proc/cmdline", "root=/dev/sda1 intel_iommu=off\n");
        let r = run(&h);
        let f = get(&r, "iommu");
        assert_eq!(f.status, Status::Fail);
        assert!(f.message.contains(
            "present (dmar0 (Intel VT-d), dmar1 (Intel VT-d)) but the kernel does not use it"
        ));
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .contains("intel_iommu=on iommu=pt"));
        let c = get(&r, "cmdline-iommu");
        assert_eq!(c.status, Status::Fail);
        assert!(c.message.contains("`intel_iommu=off`"));
        assert!(get(&r, "iommu-group").message.contains("in no IOMMU group"));
    }

    #[test]
    fn cmdline_flags() {
        let h = good();
        h.file("/proc/cmdline", "root=/dev/sda1 quiet\n");
        let r = run(&h);
        // Groups exist, so a missing intel_iommu=on only means the default turned it on.
        let c = get(&r, "cmdline-iommu");
        assert_eq!(c.status, Status::Pass);
        assert!(c.message.contains("turned the IOMMU on by default"));
        let pt = get(&r, "cmdline-iommu-pt");
        assert_eq!(pt.status, Status::Warn);
        assert!(pt.fix.as_deref().unwrap().contains("add `iommu=pt`"));
        assert!(r.ready);
    }

    #[test]
    fn interrupt_remapping_sources() {
        let h = good();
        // No IR-* chips: the ECAP bit decides between warn and fail.
        h.file("/proc/interrupts", " 24:  0  PCI-MSI 512000-edge  ahci\n");
        let r = run(&h);
        assert_eq!(get(&r, "interrupt-remapping").status, Status::Warn);
        h.file("/sys/class/iommu/dmar1/intel-iommu/ecap", "f0205efe782\n");
        let f = run(&h);
        let f = get(&f, "interrupt-remapping");
        assert_eq!(f.status, Status::Fail);
        assert!(
            f.message.contains("ECAP bit 3 clear on dmar1"),
            "{}",
            f.message
        );
        assert!(f
            .fix
            .as_deref()
            .unwrap()
            .contains("allow_unsafe_interrupts=1"));
        // Turned off on the command line.
        h.file("/proc/cmdline", "intel_iommu=on intremap=off\n");
        let r = run(&h);
        assert!(get(&r, "interrupt-remapping")
            .fix
            .as_deref()
            .unwrap()
            .contains("remove `intremap=off`"));
    }

    #[test]
    fn vfio_modules_missing() {
        let h = good();
        for m in ["vfio", "vfio_pci", "vfio_iommu_type1"] {
            std::fs::remove_dir_all(h.p(&format!("/sys/module/{m}"))).unwrap();
        }
        std::fs::remove_file(h.p("/dev/vfio/vfio")).unwrap();
        h.file("/proc/sys/kernel/osrelease", "6.8.0-test\n");
        // No module directory at all.
        let r = run(&h);
        assert!(!r.ready);
        let v = get(&r, "module-vfio");
        assert_eq!(v.status, Status::Fail);
        assert!(
            v.message.contains("no /lib/modules/6.8.0-test"),
            "{}",
            v.message
        );
        assert_eq!(get(&r, "vfio-dma-backend").status, Status::Fail);
        let d = get(&r, "dev-vfio");
        assert_eq!(d.status, Status::Fail);
        assert!(d.fix.as_deref().unwrap().contains("modprobe vfio"));
        // Loadable modules: warnings with the modprobe to run.
        h.file(
            "/lib/modules/6.8.0-test/modules.dep",
            "kernel/drivers/vfio/vfio.ko.zst:\nkernel/drivers/vfio/pci/vfio-pci.ko.zst: kernel/drivers/vfio/vfio.ko.zst\n\
             kernel/drivers/vfio/vfio_iommu_type1.ko.zst:\n",
        );
        let r = run(&h);
        assert_eq!(get(&r, "module-vfio").fix.as_deref(), Some("modprobe vfio"));
        assert_eq!(get(&r, "module-vfio-pci").status, Status::Warn);
        assert!(get(&r, "module-vfio-pci")
            .fix
            .as_deref()
            .unwrap()
            .starts_with("modprobe vfio-pci"));
        assert_eq!(
            get(&r, "vfio-dma-backend").fix.as_deref(),
            Some("modprobe vfio_iommu_type1")
        );
        // Not built at all.
        h.file(
            "/lib/modules/6.8.0-test/modules.dep",
            "kernel/drivers/nvme/host/nvme.ko:\n",
        );
        let r = run(&h);
        assert!(get(&r, "module-vfio-pci")
            .fix
            .as_deref()
            .unwrap()
            .contains("CONFIG_VFIO_PCI"));
        // iommufd alone is a DMA backend.
        h.file("/dev/iommu", "");
        let r = run(&h);
        assert_eq!(get(&r, "vfio-dma-backend").status, Status::Pass);
        assert_eq!(get(&r, "dev-vfio").status, Status::Warn);
    }

    #[test]
    fn memlock_too_low() {
        let h = good();
        h.file(
            "/proc/self/limits",
            "Max locked memory         8388608              8388608              bytes\n",
        );
        let r = check(&h.root(), CheckOptions { memory: 4 << 30 }).unwrap();
        let m = get(&r, "memlock");
        assert_eq!(m.status, Status::Fail);
        assert!(
            m.message
                .contains("RLIMIT_MEMLOCK is 8 MiB, too low to pin 4 GiB"),
            "{}",
            m.message
        );
        assert!(m
            .fix
            .as_deref()
            .unwrap()
            .contains("/etc/security/limits.conf"));
        assert!(!r.ready);
        // Soft limit low, hard limit high enough: ulimit alone fixes it.
        h.file(
            "/proc/self/limits",
            "Max locked memory         65536                unlimited            bytes\n",
        );
        let r = run(&h);
        assert_eq!(
            get(&r, "memlock").fix.as_deref().unwrap(),
            "`ulimit -l 1048576` (or `ulimit -l unlimited`) in the shell that starts conduit"
        );
        // Enough, or CAP_IPC_LOCK: pass.
        let r = check(&h.root(), CheckOptions { memory: 65536 }).unwrap();
        assert_eq!(get(&r, "memlock").status, Status::Pass);
        h.file("/proc/self/status", "CapEff:\t000001ffffffffff\n");
        let r = run(&h);
        assert_eq!(get(&r, "memlock").status, Status::Pass);
        assert!(get(&r, "memlock").message.contains("CAP_IPC_LOCK"));
    }

    #[test]
    fn hugepages_are_information() {
        let h = good();
        h.file(
            "/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages",
            "100\n",
        );
        h.file(
            "/sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages",
            "200\n",
        );
        let r = run(&h);
        let f = get(&r, "hugepages");
        assert_eq!(f.status, Status::Warn);
        assert!(f.message.contains("100 free 2 MiB hugepages, 512 needed"));
        assert_eq!(
            f.fix.as_deref(),
            Some("echo 612 > /sys/kernel/mm/hugepages/hugepages-2048kB/nr_hugepages")
        );
        assert!(r.ready);
    }

    #[test]
    fn nouveau_bound_to_a_gpu() {
        let h = good();
        h.pci("0000:65:00.0", "10de:2330", 0x030200)
            .driver("nouveau")
            .group(30);
        let r = run(&h);
        assert!(!r.ready);
        let f = r
            .findings
            .iter()
            .find(|f| f.check == "gpu-driver" && f.device.as_deref() == Some("0000:65:00.0"))
            .unwrap();
        assert_eq!(f.status, Status::Fail);
        assert!(f
            .message
            .contains("NVIDIA H100 SXM5 80GB) is held by the host GPU driver nouveau"));
        let fix = f.fix.as_deref().unwrap();
        assert!(fix.contains("`conduit host bind 0000:65:00.0`"), "{fix}");
        assert!(fix.contains("vfio-pci.ids=10de:2330"), "{fix}");
        // The nouveau GPU alone in its group: no separate group failure for it.
        let g = r
            .findings
            .iter()
            .find(|f| f.check == "iommu-group" && f.device.as_deref() == Some("0000:65:00.0"))
            .unwrap();
        assert_eq!(g.status, Status::Pass);
    }

    #[test]
    fn a_non_viable_group() {
        let h = good();
        h.pci("0000:17:00.1", "10de:22a3", 0x040300)
            .driver("snd_hda_intel")
            .group(20);
        h.pci("0000:16:01.0", "8086:2030", 0x060400)
            .driver("pcieport")
            .group(20);
        let r = run(&h);
        assert!(!r.ready);
        let g = get(&r, "iommu-group");
        assert_eq!(g.status, Status::Fail);
        assert!(
            g.message.contains("0000:17:00.1 is bound to snd_hda_intel"),
            "{}",
            g.message
        );
        assert!(
            !g.message.contains("0000:16:01.0 is bound"),
            "bridges are fine: {}",
            g.message
        );
        assert!(g
            .fix
            .as_deref()
            .unwrap()
            .contains("conduit host bind 0000:17:00.0"));
        let json = serde_json::to_value(&r).unwrap();
        assert_eq!(json["ready"], false);
        let bad: Vec<&serde_json::Value> = json["findings"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|f| f["status"] == "fail")
            .collect();
        assert_eq!(bad.len(), 1);
        assert_eq!(bad[0]["check"], "iommu-group");
        assert_eq!(bad[0]["device"], "0000:17:00.0");
    }
}
