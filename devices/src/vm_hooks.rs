//! What devices need from the VM, as small traits the vmm implements over KVM, so that the
//! device code unit-tests without /dev/kvm.

use pci::MsiMessage;
use vmm_sys_util::eventfd::EventFd;

/// A failed KVM operation, with what was attempted.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HookError(pub String);

/// GSI routes and irqfds: how an eventfd becomes a guest MSI without waking the VMM.
pub trait IrqRouting: Send + Sync {
    /// Reserves a GSI for an MSI route.
    fn allocate_gsi(&self) -> Result<u32, HookError>;
    /// Returns a GSI no longer used.
    fn release_gsi(&self, gsi: u32);
    /// Sets (adds or replaces) the MSI routes in `set` and removes the GSIs in `remove`, in
    /// one commit of the VM-wide routing table.
    fn update_msi_routes(&self, set: &[(u32, MsiMessage)], remove: &[u32])
        -> Result<(), HookError>;
    /// Makes a write to `evt` inject `gsi`.
    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), HookError>;
    /// Makes a write to `evt` assert level-triggered `gsi`; KVM writes `resample` when the
    /// guest EOIs it (so the source can re-assert if still pending).
    fn register_irqfd_with_resample(
        &self,
        evt: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), HookError>;
    /// Undoes [`Self::register_irqfd`] or [`Self::register_irqfd_with_resample`].
    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), HookError>;
}

/// KVM memslots for host memory the guest accesses directly (mmapped device BARs).
pub trait MemslotMapper: Send + Sync {
    /// Maps `size` bytes of host memory at `host_addr` at guest-physical `gpa`; returns the
    /// slot. The caller keeps the host mapping alive until [`Self::unmap`].
    fn map(&self, gpa: u64, size: u64, host_addr: u64) -> Result<u32, HookError>;
    /// Removes a slot created by [`Self::map`].
    fn unmap(&self, slot: u32) -> Result<(), HookError>;
}

/// Why a guest-programmed BAR address is not used.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum BarRefusal {
    /// The range overlaps guest RAM.
    #[error("it overlaps guest RAM {start:#x}..{end:#x}")]
    Ram {
        /// First RAM address in the clash.
        start: u64,
        /// End (exclusive) of that RAM region.
        end: u64,
    },
    /// The range overlaps a range the platform reserves (ECAM, IOAPIC, local APIC, ...).
    #[error("it overlaps the {what} at {start:#x}..{end:#x}")]
    Reserved {
        /// What lives there.
        what: &'static str,
        /// Start of the reserved range.
        start: u64,
        /// End (exclusive).
        end: u64,
    },
    /// The range overlaps another BAR (of this or another device).
    #[error("it overlaps BAR{bar} of {device} at {addr:#x}+{size:#x}")]
    Bar {
        /// The other device.
        device: String,
        /// Its BAR index (6 = ROM).
        bar: u8,
        /// Where that BAR is.
        addr: u64,
        /// Its size.
        size: u64,
    },
    /// The range is not inside a PCI window for its kind.
    #[error("it lies outside the guest's PCI {windows}")]
    OutsideWindows {
        /// The windows it may use, for the message.
        windows: String,
    },
}

/// Where a guest may put a BAR: the vmm knows guest RAM, the PCI windows and every
/// device's BARs, and keeps one claim per BAR.
pub trait BarPlacement: Send + Sync {
    /// Claims `[addr, addr + size)` (`kind` space) for BAR `bar` of `device`, releasing the
    /// range the BAR claimed before. Refused (the old claim stays) when the range leaves the
    /// PCI windows for its kind or overlaps RAM, a reserved range or another BAR's claim.
    fn claim(
        &self,
        device: &str,
        bar: u8,
        kind: pci::BarKind,
        addr: u64,
        size: u64,
    ) -> Result<(), BarRefusal>;
}

/// IOMMU mappings of device memory, for peer-to-peer DMA between passthrough devices: the
/// vmm implements it over the VM's VFIO container (type1) or IOAS (iommufd).
pub trait DmaMapper: Send + Sync {
    /// Maps `size` bytes of host memory at `host_addr` (an mmapped device BAR area) at
    /// `iova` in the IOMMU. The caller keeps the host mapping alive until [`Self::unmap`].
    fn map(&self, iova: u64, size: u64, host_addr: u64) -> Result<(), HookError>;
    /// Removes a mapping made by [`Self::map`] with the same `iova` and `size`.
    fn unmap(&self, iova: u64, size: u64) -> Result<(), HookError>;
}
