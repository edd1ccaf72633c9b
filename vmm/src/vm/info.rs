//! What `Vm::info` reports (and `GET /api/v1/vm.info` returns as JSON; documented in
//! `resources/openapi.json`, components `VmInfo`).

use serde::Serialize;

use crate::config::VmConfig;
use crate::event_loop::Outcome;

/// Where a VM is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum VmState {
    /// Created (configuration and files checked), never booted. Nothing is held on the host.
    Created,
    /// Being built (first boot, or a rebuild after a reboot).
    Booting,
    /// vCPUs running.
    Running,
    /// Stopped after running; `stopped` says why. It can be booted again.
    Shutdown,
}

impl std::fmt::Display for VmState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            VmState::Created => "created",
            VmState::Booting => "booting",
            VmState::Running => "running",
            VmState::Shutdown => "shut down",
        })
    }
}

/// One guest RAM region.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RamRegion {
    /// Guest-physical start.
    pub guest_address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// Guest memory.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct MemoryInfo {
    /// Guest RAM in bytes.
    pub bytes: u64,
    /// Backed by 2 MiB hugepages.
    pub hugepages: bool,
    /// RAM regions of the running VM (empty when it is not running).
    pub regions: Vec<RamRegion>,
}

/// The vCPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VcpuInfo {
    /// How many the VM has.
    pub count: u8,
    /// How many threads run them now (0 unless running).
    pub running: u8,
}

/// A BAR of a passthrough device, where the guest sees it now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BarInfo {
    /// BAR index 0..=5 (6 = expansion ROM).
    pub index: u8,
    /// `io`, `mem32` or `mem64`.
    pub kind: &'static str,
    /// Prefetchable memory.
    pub prefetchable: bool,
    /// Guest-physical address (or I/O port).
    pub guest_address: u64,
    /// Size in bytes.
    pub size: u64,
}

/// An IOVA range of a device BAR mapped in the IOMMU for peer-to-peer DMA.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DmaRangeInfo {
    /// BAR index.
    pub bar: u8,
    /// IOVA, equal to the guest-physical address of that part of the BAR.
    pub iova: u64,
    /// Size in bytes.
    pub size: u64,
}

/// A passthrough device of the running VM.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeviceInfo {
    /// Address on the host, `DDDD:BB:DD.F`.
    pub host_address: String,
    /// Address on the guest's PCI bus, `0000:00:DD.F`.
    pub guest_address: String,
    /// The host IOMMU group (null if sysfs does not say).
    pub iommu_group: Option<u32>,
    /// BARs as the guest placed them.
    pub bars: Vec<BarInfo>,
    /// MSI-X vectors armed on the host (the guest unmasked them), by table index.
    pub msix_vectors_armed: Vec<u16>,
    /// The BARs are DMA-mapped for peer-to-peer DMA (`p2p=on`).
    pub p2p: bool,
    /// The IOVA ranges mapped for it now (empty without p2p).
    pub p2p_dma: Vec<DmaRangeInfo>,
}

/// When and how fast the VM booted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BootInfo {
    /// When the vCPUs of the current (or last) run started, ms since the Unix epoch.
    pub started_at_unix_ms: u64,
    /// Time to build the VM (host checks to vCPUs created), ms.
    pub build_ms: u64,
    /// Time the current run has been up (or the last run was up), ms.
    pub uptime_ms: u64,
    /// Builds so far: 1 after the first boot, +1 per reboot.
    pub boots: u32,
}

/// Everything known about a VM.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct VmInfo {
    /// Lifecycle state.
    pub state: VmState,
    /// Its configuration.
    pub config: VmConfig,
    /// Guest memory.
    pub memory: MemoryInfo,
    /// vCPUs.
    pub vcpus: VcpuInfo,
    /// Passthrough devices (empty unless running).
    pub devices: Vec<DeviceInfo>,
    /// Boot times (null before the first boot).
    pub boot: Option<BootInfo>,
    /// Why the last run stopped (null unless shut down).
    pub stopped: Option<StopInfo>,
}

/// Why a run ended: the outcome, or the error that ended it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(untagged)]
pub enum StopInfo {
    /// The VM stopped.
    Outcome(Outcome),
    /// A rebuild after a reboot failed.
    Error {
        /// Always `error`.
        reason: &'static str,
        /// The error.
        detail: String,
    },
}
