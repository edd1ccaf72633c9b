//! Building and running one VM: a linear recipe (host checks → memory → VM → devices →
//! guest image → vCPUs), the run (vCPU threads and the main loop until something stops the
//! VM), then teardown in reverse by dropping.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex, Weak};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::coalesced_io::CoalescedRing;
use crate::config::{SerialMode, VmConfig};
use crate::event_loop::{HostControl, Outcome, VmmLoop};
use crate::kvm_hooks::{DeviceMemslots, GsiRouting};
use crate::memory::{self, GuestMemoryMmap};
use crate::passthrough::{self, AttachContext, BarAllocator, Passthrough};
use crate::pci_host::{self, PciSegment};
use crate::platform;
use crate::regs::{self, BootCpu};
use crate::seccomp::SeccompFilters;
use crate::vcpu::{self, IoBuses, VmEvents};
use crate::{cpuid, kvm_host};
use devices::acpi_pm::AcpiPm;
use devices::vfio::VfioPciDevice;
use devices::vm_hooks::IrqRouting;

use super::VmError;

/// Identity-map page and TSS for Intel's real-mode emulation, just below the IOAPIC.
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
const KVM_TSS_ADDR: usize = 0xfeff_d000;

fn kvm_err(what: &'static str) -> impl FnOnce(kvm_ioctls::Error) -> VmError {
    move |source| VmError::Kvm { what, source }
}

/// Physical address bits the guest may use (CPUID 0x80000008 EAX[7:0]), capped to what we
/// can describe safely.
fn guest_phys_bits(kvm: &Kvm) -> u8 {
    kvm.get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .ok()
        .and_then(|c| {
            c.as_slice()
                .iter()
                .find(|e| e.function == 0x8000_0008)
                .map(|e| (e.eax & 0xff) as u8)
        })
        .filter(|b| *b >= 36)
        .unwrap_or(36)
        .min(48)
}

/// A passthrough device as the VM sees it, for `info`.
pub(super) struct AttachedDevice {
    /// Host address, `DDDD:BB:DD.F`.
    pub host_address: String,
    /// Address on the guest's bus 0, `0000:00:DD.F`.
    pub guest_address: String,
    /// IOMMU group on the host.
    pub iommu_group: Option<u32>,
    /// The device; weak so that `info` never keeps it past teardown.
    pub device: Weak<Mutex<VfioPciDevice>>,
}

/// A built VM, ready to run.
pub(super) struct BuiltVm {
    // Field order is drop order: vCPUs and devices go before the VM fd, and the VM fd before
    // the guest memory that its memslots point into.
    vcpus: Vec<VcpuFd>,
    platform: platform::Platform,
    _pci: PciSegment,
    buses: Arc<IoBuses>,
    events: Arc<VmEvents>,
    _passthrough: Option<Passthrough>,
    _vm: Arc<VmFd>,
    _memory: GuestMemoryMmap,
    /// RAM regions (guest address, size), for `info`.
    pub ram: Vec<(u64, u64)>,
    /// Passthrough devices, for `info`.
    pub devices: Vec<AttachedDevice>,
}

/// Creates the VM with its in-kernel interrupt controllers and PIT.
fn create_vm(kvm: &Kvm) -> Result<VmFd, VmError> {
    let vm = kvm.create_vm().map_err(kvm_err("KVM_CREATE_VM"))?;
    vm.set_identity_map_address(KVM_IDENTITY_MAP_ADDR)
        .map_err(kvm_err("KVM_SET_IDENTITY_MAP_ADDR"))?;
    vm.set_tss_address(KVM_TSS_ADDR)
        .map_err(kvm_err("KVM_SET_TSS_ADDR"))?;
    vm.create_irq_chip()
        .map_err(kvm_err("KVM_CREATE_IRQCHIP"))?;
    let pit = kvm_pit_config {
        flags: KVM_PIT_SPEAKER_DUMMY,
        ..Default::default()
    };
    vm.create_pit2(pit).map_err(kvm_err("KVM_CREATE_PIT2"))?;
    Ok(vm)
}

/// Loads the guest image and returns where the boot CPU starts.
fn load_guest(
    config: &VmConfig,
    mem: &GuestMemoryMmap,
    layout: &boot::MemoryLayout,
) -> Result<BootCpu, VmError> {
    if let Some(kernel) = &config.kernel {
        let spec = boot::BootSpec {
            kernel: &kernel.path,
            initramfs: kernel.initramfs.as_deref(),
            cmdline: &kernel.cmdline,
        };
        let acpi = boot::acpi::AcpiConfig::new(u32::from(config.cpus), layout);
        let loaded = boot::load_guest(mem, layout, &spec, &acpi)?;
        return Ok(BootCpu::Kernel(loaded.cpu));
    }
    let Some(payload) = &config.payload else {
        return Err(VmError::Config("kernel: missing".into()));
    };
    let code = std::fs::read(&payload.path).map_err(|e| {
        VmError::Config(format!(
            "payload.path: cannot read {}: {e}",
            payload.path.display()
        ))
    })?;
    mem.write_slice(&code, GuestAddress(super::PAYLOAD_ADDR))
        .map_err(|e| {
            VmError::Config(format!(
                "payload.path: {} does not fit in guest memory: {e}",
                payload.path.display()
            ))
        })?;
    Ok(BootCpu::RealMode {
        entry: super::PAYLOAD_ADDR,
    })
}

/// The IOMMU group of a host PCI device, from its sysfs link.
fn iommu_group(address: &str) -> Option<u32> {
    std::fs::read_link(
        Path::new("/sys/bus/pci/devices")
            .join(address)
            .join("iommu_group"),
    )
    .ok()?
    .file_name()?
    .to_str()?
    .parse()
    .ok()
}

/// Where each passthrough device sits on the guest's bus 0.
fn attached_devices(pass: Option<&Passthrough>, pci: &PciSegment) -> Vec<AttachedDevice> {
    let Some(pass) = pass else {
        return Vec::new();
    };
    let bus = pci.bus.lock().unwrap_or_else(|p| p.into_inner());
    pass.devices
        .iter()
        .map(|dev| {
            let host_address = dev
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .name()
                .to_string();
            let guest_address = bus
                .devices()
                .find(|(_, d)| std::ptr::addr_eq(Arc::as_ptr(d), Arc::as_ptr(dev)))
                .map(|(a, _)| format!("0000:{a}"))
                .unwrap_or_default();
            AttachedDevice {
                iommu_group: iommu_group(&host_address),
                host_address,
                guest_address,
                device: Arc::downgrade(dev),
            }
        })
        .collect()
}

/// Builds the VM: the linear recipe. Checks that the host KVM can run the guest first.
pub(super) fn build(kvm: &Kvm, config: &VmConfig) -> Result<BuiltVm, VmError> {
    config.validate()?;
    if config.kernel.is_some() {
        kvm_host::check_runs_stock_linux(Path::new("/sys/module"))?;
    }
    let max = kvm.get_max_vcpus().min(255);
    if usize::from(config.cpus) > max {
        return Err(VmError::Config(format!(
            "cpus: {} is more than this host's KVM allows ({max})",
            config.cpus
        )));
    }
    let layout = boot::MemoryLayout::plan(config.memory_bytes, guest_phys_bits(kvm))
        .map_err(boot::Error::from)?;
    memory::check_host_can_give(
        config.memory_bytes,
        config.hugepages,
        Path::new("/proc/meminfo"),
        Path::new("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages"),
    )?;
    let mem = memory::create(&layout.ram_regions(), config.hugepages)?;

    let vm = create_vm(kvm)?;
    let first_device_slot = memory::register_memslots(&vm, &mem)?;
    let vm = Arc::new(vm);

    let events = Arc::new(VmEvents::new().map_err(|source| VmError::Os {
        what: "creating VM events",
        source,
    })?);
    let buses = Arc::new(IoBuses::default());
    let platform = platform::attach(&vm, &buses, &events, &config.serial)?;
    let pci = pci_host::attach(&buses)?;
    let routing: Arc<dyn IrqRouting> = Arc::new(GsiRouting::new(vm.clone()));
    let mut bar_allocator = BarAllocator::new(&layout)
        .ok_or_else(|| VmError::Config("invalid PCI windows in the memory layout".into()))?;
    let passthrough = passthrough::attach(
        &config.devices,
        AttachContext {
            vm: &vm,
            memory: &mem,
            pci_bus: &pci.bus,
            buses: &buses,
            routing,
            memslots: Arc::new(DeviceMemslots::new(vm.clone(), first_device_slot)),
            bars: &mut bar_allocator,
            iommu: config.iommu,
            events: events.clone(),
        },
    )?;

    let boot_cpu = load_guest(config, &mem, &layout)?;

    let supported = kvm
        .get_supported_cpuid(KVM_MAX_CPUID_ENTRIES)
        .map_err(kvm_err("KVM_GET_SUPPORTED_CPUID"))?;
    let mut vcpus = Vec::with_capacity(usize::from(config.cpus));
    for i in 0..u32::from(config.cpus) {
        let vcpu = vm
            .create_vcpu(u64::from(i))
            .map_err(kvm_err("KVM_CREATE_VCPU"))?;
        let mut c = supported.clone();
        cpuid::configure(&mut c, i, u32::from(config.cpus));
        vcpu.set_cpuid2(&c).map_err(kvm_err("KVM_SET_CPUID2"))?;
        regs::setup_msrs(&vcpu, i)?;
        regs::setup_fpu(&vcpu, i)?;
        regs::setup_lapic(&vcpu, i)?;
        if i == 0 {
            regs::setup_boot_cpu(&vcpu, i, &boot_cpu)?;
        }
        vcpus.push(vcpu);
    }
    if let Some(first) = vcpus.first() {
        if let Some(ring) = CoalescedRing::enable(kvm, &vm, first) {
            // A fresh IoBuses has no ring yet: `set` cannot fail here.
            let _ = buses.coalesced.set(ring);
        }
    }
    let devices = attached_devices(passthrough.as_ref(), &pci);
    let ram = layout
        .ram_regions()
        .iter()
        .map(|(a, s)| (a.0, *s as u64))
        .collect();
    Ok(BuiltVm {
        vcpus,
        platform,
        _pci: pci,
        buses,
        events,
        _passthrough: passthrough,
        _vm: vm,
        _memory: mem,
        ram,
        devices,
    })
}

impl BuiltVm {
    /// The ACPI PM registers (for the power button).
    pub fn pm(&self) -> Arc<Mutex<AcpiPm>> {
        self.platform.pm.clone()
    }

    /// Runs the vCPUs and the main loop until the guest or the host stops the VM, then
    /// stops and joins the vCPU threads. The rest of the VM goes when `self` is dropped.
    pub fn run(
        &mut self,
        serial: &SerialMode,
        control: Arc<HostControl>,
        filters: &Arc<SeccompFilters>,
    ) -> Result<Outcome, VmError> {
        let os = |what| move |source| VmError::Os { what, source };
        let stdin = match serial {
            SerialMode::Stdio => Some((std::io::stdin().as_raw_fd(), self.platform.serial.clone())),
            _ => None,
        };
        let main_loop = VmmLoop::new(stdin, self.events.clone(), control);
        let outcome = main_loop.outcome();
        let subscriber: Arc<Mutex<dyn MutEventSubscriber + Send>> = Arc::new(Mutex::new(main_loop));
        let mut manager = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| VmError::Os {
                what: "creating the event loop",
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        manager.add_subscriber(subscriber);
        vcpu::install_kick_handler().map_err(|e| VmError::Os {
            what: "installing the vCPU kick signal handler",
            source: std::io::Error::from_raw_os_error(e.errno()),
        })?;
        let vcpus = std::mem::take(&mut self.vcpus);
        let threads = vcpu::spawn_all(vcpus, self.buses.clone(), self.events.clone(), filters)
            .map_err(os("starting vCPU threads"))?;
        log::info!("started {} vCPU thread(s)", threads.len());
        let outcome = loop {
            if let Err(e) = manager.run() {
                log::error!("event loop: {e:?}");
            }
            if let Some(o) = outcome.lock().unwrap_or_else(|p| p.into_inner()).clone() {
                break o;
            }
        };
        vcpu::stop_all(threads, &self.events);
        Ok(outcome)
    }
}
