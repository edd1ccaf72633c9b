//! Attaching host PCI devices with VFIO: one container for all groups, all guest RAM
//! DMA-mapped once, each device checked, opened, reset, given guest BAR addresses from the
//! PCI windows and put on the guest's bus 0. Devices with `p2p=on` also get their BARs
//! DMA-mapped, through [`IommuDma`].
//!
//! Guest RAM is mapped (and so pinned) by a thread of its own while the guest boots: that
//! takes seconds per GiB, and a device needs it only once the guest lets it master DMA. A
//! guest write setting Bus Master Enable waits for it ([`DmaGate`]); a failed mapping
//! stops the VM with the error.

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use devices::vfio::{
    self, DeviceOptions, DmaGate, GroupError, RomChoice, RomError, RomImage, VfioPciDevice,
    VfioPciError,
};
use devices::vm_hooks::{DmaMapper, HookError, IrqRouting, MemslotMapper};
use devices::{BusDevice, BusError};
use kvm_bindings::{kvm_create_device, kvm_device_type_KVM_DEV_TYPE_VFIO};
use kvm_ioctls::VmFd;
use pci::{BarKind, PciBus, PciDevice};
use vfio_ioctls::{VfioContainer, VfioDevice, VfioDeviceFd, VfioIommufd, VfioOps};
use vm_allocator::{AddressAllocator, AllocPolicy};
use vm_memory::{GuestMemoryBackend, GuestMemoryRegion};

use crate::bar_placement::BarPlacements;
use crate::config::{DeviceConfig, RomConfig};
use crate::memory::GuestMemoryMmap;
use crate::vcpu::{IoBuses, VmEvents};

/// Errors while attaching passthrough devices.
#[derive(Debug, thiserror::Error)]
pub enum PassthroughError {
    /// Host-side check failed.
    #[error(transparent)]
    Group(#[from] GroupError),
    /// No VFIO on the host.
    #[error("cannot open /dev/vfio/vfio: {0} (load vfio-pci: modprobe vfio-pci; `conduit host check` tells more)")]
    Container(String),
    /// iommufd asked for but not usable.
    #[error("--iommu iommufd: {0}")]
    Iommufd(String),
    /// KVM VFIO device.
    #[error("cannot create the KVM VFIO device: {0}")]
    KvmDevice(kvm_ioctls::Error),
    /// Opening the device failed.
    #[error("cannot open {device} (IOMMU group {group}) with VFIO: {reason}")]
    Open {
        /// Device address.
        device: String,
        /// IOMMU group.
        group: u32,
        /// Why.
        reason: String,
    },
    /// DMA-mapping guest RAM failed; `hint` names the host limit that refused it, if known.
    #[error("cannot DMA-map guest memory into the IOMMU: {detail}{hint}")]
    DmaMap {
        /// What failed, with the kernel's error.
        detail: String,
        /// `" (...)"`: the likely cause and its fix, or empty.
        hint: &'static str,
    },
    /// This process may not pin the guest's memory.
    #[error("cannot pin guest memory for VFIO: {0}")]
    Memlock(String),
    /// The thread that maps guest RAM.
    #[error("cannot start the thread that DMA-maps guest memory: {0}")]
    MapThread(std::io::Error),
    /// Device set-up.
    #[error(transparent)]
    Device(#[from] VfioPciError),
    /// A `rom=` file.
    #[error(transparent)]
    Rom(#[from] RomError),
    /// Bus placement.
    #[error("{device}: cannot place BAR{bar} on the bus: {source}")]
    Bus {
        /// Device address.
        device: String,
        /// BAR index.
        bar: u8,
        /// Underlying error.
        source: BusError,
    },
    /// A BAR's first address refused by the placement rules (a bug of the allocator).
    #[error("{device}: BAR{bar} as placed: {reason}")]
    Placement {
        /// Device address.
        device: String,
        /// BAR index.
        bar: u8,
        /// Why.
        reason: devices::vm_hooks::BarRefusal,
    },
    /// PCI bus full.
    #[error("{device}: {source}")]
    Slot {
        /// Device address.
        device: String,
        /// Underlying error.
        source: pci::Error,
    },
}

pub use crate::config::IommuMode;

/// The IOMMU container of a VM, whichever interface it uses.
#[derive(Clone)]
enum Backend {
    Type1(Arc<VfioContainer>),
    Iommufd(Arc<VfioIommufd>),
}

impl Backend {
    fn ops(&self) -> Arc<dyn VfioOps> {
        match self {
            Backend::Type1(c) => c.clone(),
            Backend::Iommufd(i) => i.clone(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            Backend::Type1(_) => "type1",
            Backend::Iommufd(_) => "iommufd",
        }
    }

    /// Maps all of guest RAM, one mapping per RAM region.
    ///
    /// # Safety
    /// `mem` must stay mapped until [`Self::unmap`] (Passthrough keeps a clone of it).
    unsafe fn map(&self, mem: &GuestMemoryMmap) -> Result<(), PassthroughError> {
        match self {
            Backend::Type1(c) => {
                // SAFETY: as the caller promises.
                unsafe { c.vfio_map_guest_memory(mem) }.map_err(|e| dma_map_failed(None, &e))
            }
            Backend::Iommufd(i) => {
                for r in mem.iter() {
                    // SAFETY: as the caller promises; the range is one live guest region.
                    unsafe { i.vfio_dma_map(r.start_addr().0, r.len() as usize, r.as_ptr()) }
                        .map_err(|e| dma_map_failed(Some(r.start_addr().0), &e))?;
                }
                Ok(())
            }
        }
    }

    fn unmap(&self, mem: &GuestMemoryMmap) -> Result<(), String> {
        match self {
            Backend::Type1(c) => c.vfio_unmap_guest_memory(mem).map_err(|e| e.to_string()),
            Backend::Iommufd(i) => {
                for r in mem.iter() {
                    i.vfio_dma_unmap(r.start_addr().0, r.len() as usize)
                        .map_err(|e| format!("region at {:#x}: {e}", r.start_addr().0))?;
                }
                Ok(())
            }
        }
    }
}

/// DMA mappings of device BARs (p2p) in the VM's container or IOAS: IOVA = guest address.
///
/// type1 resolves the BAR mmap's PFNs and maps them. iommufd's IOMMU_IOAS_MAP pins user
/// pages, which a BAR mmap (VM_PFNMAP) has none of, so kernels refuse it (EFAULT); the
/// dma-buf path (VFIO_DEVICE_FEATURE_DMA_BUF + IOMMU_IOAS_MAP_FILE, Linux 6.19+) is not
/// used yet. Auto mode therefore picks type1 for a VM with a p2p device.
pub struct IommuDma {
    backend: Backend,
}

impl DmaMapper for IommuDma {
    fn map(&self, iova: u64, size: u64, host_addr: u64) -> Result<(), HookError> {
        let len = usize::try_from(size)
            .map_err(|_| HookError(format!("{size:#x} bytes do not fit this host")))?;
        // SAFETY: host_addr..+size is a live mmap of a device BAR that the caller (the
        // device's BAR mapping) keeps until after it calls `unmap` for this range; no Rust
        // reference into it exists (the guest and devices reach it only by address).
        let result = unsafe {
            match &self.backend {
                Backend::Type1(c) => c.vfio_dma_map(iova, len, host_addr as *mut u8),
                Backend::Iommufd(i) => i.vfio_dma_map(iova, len, host_addr as *mut u8),
            }
        };
        result.map_err(|e| match &self.backend {
            Backend::Type1(_) => HookError(format!("VFIO_IOMMU_MAP_DMA (type1): {}", chain(&e))),
            Backend::Iommufd(_) => HookError(format!(
                "IOMMU_IOAS_MAP (iommufd): {}; iommufd cannot map device memory by its mmap (it pins pages, a BAR has none): use --iommu type1 for p2p=on",
                chain(&e)
            )),
        })
    }

    fn unmap(&self, iova: u64, size: u64) -> Result<(), HookError> {
        let len = usize::try_from(size)
            .map_err(|_| HookError(format!("{size:#x} bytes do not fit this host")))?;
        match &self.backend {
            Backend::Type1(c) => c.vfio_dma_unmap(iova, len),
            Backend::Iommufd(i) => i.vfio_dma_unmap(iova, len),
        }
        .map_err(|e| HookError(chain(&e)))
    }
}

/// The error of a failed DMA map of guest RAM (of the region at `region`, when mapped one
/// region at a time), with the hint its errno calls for.
fn dma_map_failed(region: Option<u64>, e: &vfio_ioctls::VfioError) -> PassthroughError {
    let at = region.map_or(String::new(), |a| format!("region at {a:#x}: "));
    PassthroughError::DmaMap {
        detail: format!("{at}{}", chain(e)),
        hint: dma_map_hint(errno_of(e)),
    }
}

/// The OS error number somewhere in `e`'s chain of sources.
fn errno_of(e: &(dyn std::error::Error + 'static)) -> Option<i32> {
    let mut next = Some(e);
    while let Some(err) = next {
        if let Some(sys) = err.downcast_ref::<vmm_sys_util::errno::Error>() {
            return Some(sys.errno());
        }
        if let Some(n) = err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.raw_os_error())
        {
            return Some(n);
        }
        next = err.source();
    }
    None
}

/// What refuses a DMA map of guest RAM, by its errno: the memlock limit (ENOMEM, from
/// pinning) or type1's limit on the number of mappings (ENOSPC).
fn dma_map_hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::ENOMEM) => {
            " (is RLIMIT_MEMLOCK large enough for the guest memory? `ulimit -l`, or run with CAP_IPC_LOCK)"
        }
        Some(libc::ENOSPC) => {
            " (the container's limit on DMA mappings is reached: /sys/module/vfio_iommu_type1/parameters/dma_entry_limit)"
        }
        _ => "",
    }
}

/// An error with the messages of its sources that it does not already show (vfio-ioctls'
/// iommufd errors keep the errno in their source).
fn chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let more = s.to_string();
        if !text.contains(&more) {
            text = format!("{text}: {more}");
        }
        source = s.source();
    }
    text
}

/// Whether iommufd can serve `devices`: /dev/iommu exists and each device has a vfio cdev.
fn iommufd_available(devices: &[vfio::HostDevice]) -> bool {
    Path::new("/dev/iommu").exists()
        && devices
            .iter()
            .all(|d| d.sysfs_path.join("vfio-dev").is_dir())
}

/// The guest's PCI address windows, handed out to BARs, and the rules for where the guest
/// may move them later.
pub struct BarAllocator {
    io: AddressAllocator,
    mmio32: AddressAllocator,
    mmio64: AddressAllocator,
    placements: Arc<BarPlacements>,
}

impl BarAllocator {
    /// Allocators over the layout's windows.
    pub fn new(layout: &boot::MemoryLayout) -> Option<Self> {
        let w32 = layout.mmio32_window();
        let w64 = layout.mmio64_window();
        Some(Self {
            io: AddressAllocator::new(
                u64::from(boot::layout::PCI_IO_START),
                u64::from(boot::layout::PCI_IO_SIZE),
            )
            .ok()?,
            mmio32: AddressAllocator::new(w32.base, w32.size).ok()?,
            mmio64: AddressAllocator::new(w64.base, w64.size).ok()?,
            placements: Arc::new(BarPlacements::new(layout)),
        })
    }

    /// A naturally aligned address for a BAR of `size` bytes.
    pub fn place(&mut self, kind: BarKind, size: u64) -> Option<u64> {
        let alloc = match kind {
            BarKind::Io => &mut self.io,
            BarKind::Mem32 => &mut self.mmio32,
            BarKind::Mem64 => &mut self.mmio64,
        };
        alloc
            .allocate(size, size.max(4), AllocPolicy::FirstMatch)
            .ok()
            .map(|r| r.start())
    }
}

/// Routes trapped BAR accesses (MSI-X pages, I/O BARs) to the device.
struct BarTrap {
    device: Arc<Mutex<VfioPciDevice>>,
    bar: u8,
}

impl BusDevice for BarTrap {
    fn read(&mut self, _base: u64, offset: u64, data: &mut [u8]) {
        self.device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bar_read(self.bar, offset, data);
    }

    fn write(&mut self, _base: u64, offset: u64, data: &[u8]) {
        self.device
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .bar_write(self.bar, offset, data);
    }
}

/// The VM's passthrough state. Dropping it unmaps guest RAM from the IOMMU after the
/// devices are gone (they are dropped with the PCI bus and the I/O buses first).
pub struct Passthrough {
    backend: Backend,
    memory: GuestMemoryMmap,
    /// The thread mapping guest RAM into the IOMMU; true when it did.
    ram_mapping: Option<JoinHandle<bool>>,
    /// The attached devices, in command-line order.
    pub devices: Vec<Arc<Mutex<VfioPciDevice>>>,
}

impl Drop for Passthrough {
    fn drop(&mut self) {
        // Quiesce every device (interrupts off, BAR memslots gone, reset) while its group is
        // still in the container, unmap guest RAM from the IOMMU (unpinning it), and only then
        // let the devices and their groups go.
        for d in &self.devices {
            d.lock().unwrap_or_else(|p| p.into_inner()).shutdown();
        }
        // A mapping still under way finishes first: unmapping cannot overtake it.
        let mapped = self
            .ram_mapping
            .take()
            .is_some_and(|t| t.join().unwrap_or(false));
        match self.backend.unmap(&self.memory) {
            Ok(()) => {}
            Err(e) if mapped => log::warn!("unmapping guest memory from the IOMMU: {e}"),
            // What a failed mapping left (possibly nothing) goes with the container.
            Err(e) => log::debug!("unmapping guest memory after a failed mapping: {e}"),
        }
        self.devices.clear();
    }
}

/// Everything attach needs from the VM.
pub struct AttachContext<'a> {
    /// The VM.
    pub vm: &'a Arc<VmFd>,
    /// Guest RAM.
    pub memory: &'a GuestMemoryMmap,
    /// Bus 0.
    pub pci_bus: &'a Arc<Mutex<PciBus>>,
    /// The I/O buses.
    pub buses: &'a IoBuses,
    /// GSI routing.
    pub routing: Arc<dyn IrqRouting>,
    /// Memslots for BARs.
    pub memslots: Arc<dyn MemslotMapper>,
    /// BAR addresses.
    pub bars: &'a mut BarAllocator,
    /// Which IOMMU interface to use.
    pub iommu: IommuMode,
    /// Where a failed mapping of guest RAM stops the VM.
    pub events: Arc<VmEvents>,
}

impl Passthrough {
    /// The IOMMU interface in use: "type1" or "iommufd".
    pub fn iommu(&self) -> &'static str {
        self.backend.name()
    }
}

/// Starts mapping all of guest RAM into the IOMMU on a thread of its own (it inherits the
/// calling thread's seccomp filter), which opens `gate` when done; a failure fails the gate
/// and stops the VM through `events`. The thread returns whether it mapped.
fn map_ram_in_background(
    backend: &Backend,
    memory: &GuestMemoryMmap,
    gate: &Arc<DmaGate>,
    events: &Arc<VmEvents>,
) -> Result<JoinHandle<bool>, PassthroughError> {
    let bytes: u64 = memory.iter().map(|r| r.len()).sum();
    // The usual failure, a memlock limit, is told now rather than after the guest started.
    if let Some(reason) = crate::host::check::memlock_refusal(bytes) {
        return Err(PassthroughError::Memlock(reason));
    }
    let (backend, memory, gate, events) = (
        backend.clone(),
        memory.clone(),
        gate.clone(),
        events.clone(),
    );
    std::thread::Builder::new()
        .name("dma-map".into())
        .spawn(move || {
            let started = std::time::Instant::now();
            // SAFETY: guest memory stays mapped for as long as the IOMMU maps it: this
            // thread and Passthrough hold clones of it, and Passthrough joins this thread
            // and unmaps it from the IOMMU before dropping its clone.
            match unsafe { backend.map(&memory) } {
                Ok(()) => {
                    log::debug!(
                        "guest RAM ({} MiB) DMA-mapped through {} in {} ms",
                        bytes >> 20,
                        backend.name(),
                        started.elapsed().as_millis()
                    );
                    gate.open();
                    true
                }
                Err(e) => {
                    let e = e.to_string();
                    gate.fail(e.clone());
                    events.fail(e);
                    false
                }
            }
        })
        .map_err(PassthroughError::MapThread)
}

/// Checks, opens and attaches `specs`, in order.
pub fn attach(
    specs: &[DeviceConfig],
    ctx: AttachContext<'_>,
) -> Result<Option<Passthrough>, PassthroughError> {
    if specs.is_empty() {
        return Ok(None);
    }
    let sys = Path::new("/sys/bus/pci/devices");
    // Every device and ROM file is checked before anything is opened, so a bad one leaves
    // nothing behind.
    let hosts = specs
        .iter()
        .map(|s| vfio::check_host_device(sys, &s.address))
        .collect::<Result<Vec<_>, _>>()?;
    let roms = specs
        .iter()
        .zip(&hosts)
        .map(|(s, h)| {
            Ok(match &s.rom {
                RomConfig::Device => RomChoice::Device,
                RomConfig::Off => RomChoice::Hidden,
                RomConfig::File(p) => RomChoice::Image(RomImage::load(&h.address, p)?),
            })
        })
        .collect::<Result<Vec<_>, RomError>>()?;
    let any_p2p = specs.iter().any(|s| s.p2p);

    let mut kvm_dev = kvm_create_device {
        type_: kvm_device_type_KVM_DEV_TYPE_VFIO,
        fd: 0,
        flags: 0,
    };
    let kvm_vfio = ctx
        .vm
        .create_device(&mut kvm_dev)
        .map_err(PassthroughError::KvmDevice)?;
    let kvm_vfio = Some(Arc::new(VfioDeviceFd::new_from_kvm(kvm_vfio)));
    let use_iommufd = match ctx.iommu {
        IommuMode::Type1 => false,
        // iommufd cannot DMA-map BARs (IommuDma): type1 for p2p, when the host has it.
        IommuMode::Auto if any_p2p && Path::new("/dev/vfio/vfio").exists() => false,
        IommuMode::Auto => iommufd_available(&hosts),
        IommuMode::Iommufd => {
            if !iommufd_available(&hosts) {
                return Err(PassthroughError::Iommufd(
                    "the host has no /dev/iommu or a device has no VFIO cdev (needs CONFIG_IOMMUFD and CONFIG_VFIO_DEVICE_CDEV)".into(),
                ));
            }
            true
        }
    };
    let backend = if use_iommufd {
        let iommufd = iommufd_ioctls::IommuFd::new()
            .map_err(|e| PassthroughError::Iommufd(format!("cannot open /dev/iommu: {e}")))?;
        Backend::Iommufd(Arc::new(
            VfioIommufd::new(Arc::new(iommufd), None, kvm_vfio)
                .map_err(|e| PassthroughError::Iommufd(e.to_string()))?,
        ))
    } else {
        Backend::Type1(Arc::new(
            VfioContainer::new(kvm_vfio).map_err(|e| PassthroughError::Container(e.to_string()))?,
        ))
    };

    let mut opened = Vec::with_capacity(hosts.len());
    for h in &hosts {
        let dev = VfioDevice::new(&h.sysfs_path, backend.ops(), use_iommufd).map_err(|e| {
            let busy = format!("{e:?}").contains("EBUSY") || e.to_string().contains("busy");
            PassthroughError::Open {
                device: h.address.clone(),
                group: h.group,
                reason: if busy {
                    "the device is in use (another VM or process holds its IOMMU group)".into()
                } else {
                    e.to_string()
                },
            }
        })?;
        opened.push(Arc::new(dev));
    }
    log::debug!(
        "passthrough: {} devices behind {}",
        hosts.len(),
        backend.name()
    );
    // The container has its IOMMU type once a group is in it: map all RAM now, on a thread
    // of its own, before any device may master DMA (the gate).
    let gate = Arc::new(DmaGate::pending());
    let ram_mapping = map_ram_in_background(&backend, ctx.memory, &gate, &ctx.events)?;
    let mut pass = Passthrough {
        backend,
        memory: ctx.memory.clone(),
        ram_mapping: Some(ram_mapping),
        devices: Vec::new(),
    };

    for (((h, vfio_dev), spec), rom) in hosts.iter().zip(opened).zip(specs).zip(roms) {
        let bars = &mut *ctx.bars;
        let mut place = |kind, size, _prefetch| bars.place(kind, size);
        let p2p = spec.p2p.then(|| {
            Arc::new(IommuDma {
                backend: pass.backend.clone(),
            }) as Arc<dyn DmaMapper>
        });
        let dev = VfioPciDevice::new(
            h,
            vfio_dev,
            ctx.routing.clone(),
            ctx.memslots.clone(),
            &mut place,
            DeviceOptions { p2p, rom },
        )?;
        let regions = dev.bars();
        let placements = ctx.bars.placements.clone();
        for r in &regions {
            devices::vm_hooks::BarPlacement::claim(
                placements.as_ref(),
                &h.address,
                r.index,
                r.kind,
                r.addr,
                r.size,
            )
            .map_err(|reason| PassthroughError::Placement {
                device: h.address.clone(),
                bar: r.index,
                reason,
            })?;
        }
        let mut dev = dev;
        dev.set_bar_placement(placements);
        dev.set_dma_gate(gate.clone());
        let pin = dev.intx_pin();
        let dev = Arc::new(Mutex::new(dev));
        let slot = ctx
            .pci_bus
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .add_device(dev.clone() as pci::SharedPciDevice)
            .map_err(|source| PassthroughError::Slot {
                device: h.address.clone(),
                source,
            })?;
        if let Some(gsi) = boot::acpi::pci_intx_gsi(slot.device, pin) {
            dev.lock()
                .unwrap_or_else(|p| p.into_inner())
                .attach_intx(gsi)?;
        }
        for r in regions {
            let trap = Arc::new(Mutex::new(BarTrap {
                device: dev.clone(),
                bar: r.index,
            }));
            let bus = if r.kind == BarKind::Io {
                &ctx.buses.pio
            } else {
                &ctx.buses.mmio
            };
            bus.write()
                .unwrap_or_else(|p| p.into_inner())
                .insert(trap, r.addr, r.size)
                .map_err(|source| PassthroughError::Bus {
                    device: h.address.clone(),
                    bar: r.index,
                    source,
                })?;
        }
        pass.devices.push(dev);
    }
    Ok(Some(pass))
}

#[cfg(test)]
mod tests {
    use super::{chain, dma_map_failed, errno_of};

    #[derive(Debug, thiserror::Error)]
    #[error("failed iommufd ioctl")]
    struct Outer(#[source] std::io::Error);

    #[derive(Debug, thiserror::Error)]
    #[error("map: {0}")]
    struct ShowsItsSource(#[source] std::io::Error);

    #[test]
    fn error_chains_show_each_message_once() {
        let efault = || std::io::Error::from_raw_os_error(libc::EFAULT);
        assert_eq!(
            chain(&Outer(efault())),
            "failed iommufd ioctl: Bad address (os error 14)"
        );
        assert_eq!(
            chain(&ShowsItsSource(efault())),
            "map: Bad address (os error 14)"
        );
    }

    #[test]
    fn a_failed_guest_map_names_the_limit_behind_its_errno() {
        let type1 =
            |errno| vfio_ioctls::VfioError::IommuDmaMap(vmm_sys_util::errno::Error::new(errno));
        let message = |errno| dma_map_failed(None, &type1(errno)).to_string();
        assert_eq!(errno_of(&type1(libc::ENOSPC)), Some(libc::ENOSPC));
        assert_eq!(
            errno_of(&Outer(std::io::Error::from_raw_os_error(libc::ENOMEM))),
            Some(libc::ENOMEM)
        );
        let enospc = message(libc::ENOSPC);
        assert!(enospc.contains("No space left on device"), "{enospc}");
        assert!(enospc.ends_with("(the container's limit on DMA mappings is reached: /sys/module/vfio_iommu_type1/parameters/dma_entry_limit)"), "{enospc}");
        let enomem = message(libc::ENOMEM);
        assert!(enomem.contains("RLIMIT_MEMLOCK"), "{enomem}");
        assert!(!enomem.contains("dma_entry_limit"), "{enomem}");
        let per_region = dma_map_failed(Some(0x10_0000), &type1(libc::ENOSPC)).to_string();
        assert!(
            per_region
                .starts_with("cannot DMA-map guest memory into the IOMMU: region at 0x100000: "),
            "{per_region}"
        );
        let efault = message(libc::EFAULT);
        assert!(efault.ends_with("Bad address (os error 14)"), "{efault}");
    }
}
