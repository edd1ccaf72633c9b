//! Building and running one VM: a linear recipe (host checks → memory → VM → devices →
//! guest image → vCPUs → run), then teardown in reverse by dropping.

use std::os::fd::AsRawFd;
use std::path::Path;
use std::sync::{Arc, Mutex};

use event_manager::{EventManager, MutEventSubscriber, SubscriberOps};
use kvm_bindings::{kvm_pit_config, KVM_MAX_CPUID_ENTRIES, KVM_PIT_SPEAKER_DUMMY};
use kvm_ioctls::{Kvm, VcpuFd, VmFd};
use vm_memory::{Bytes, GuestAddress};

use crate::config::{GuestImage, OnReboot, SerialMode, VmConfig};
use crate::event_loop::{self, Outcome, SignalFd, VmmLoop};
use crate::kvm_hooks::{DeviceMemslots, GsiRouting};
use crate::memory::{self, GuestMemoryMmap};
use crate::passthrough::{self, AttachContext, BarAllocator, Passthrough};
use crate::pci_host::{self, PciSegment};
use crate::platform;
use crate::regs::{self, BootCpu};
use crate::vcpu::{self, IoBuses, VmEvents};
use crate::{cpuid, kvm_host};
use devices::vm_hooks::IrqRouting;

/// Guest-physical address of a [`GuestImage::RealModePayload`] (CS=0, IP=0x1000).
pub const PAYLOAD_ADDR: u64 = 0x1000;
/// Identity-map page and TSS for Intel's real-mode emulation, just below the IOAPIC.
const KVM_IDENTITY_MAP_ADDR: u64 = 0xfeff_c000;
const KVM_TSS_ADDR: usize = 0xfeff_d000;

/// Everything that can stop a VM from being built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// Host KVM problem.
    #[error(transparent)]
    KvmHost(#[from] kvm_host::KvmHostError),
    /// Invalid VM configuration.
    #[error("{0}")]
    Config(String),
    /// Guest memory.
    #[error(transparent)]
    Memory(#[from] memory::MemoryError),
    /// Boot image, boot parameters, ACPI.
    #[error(transparent)]
    Boot(#[from] boot::Error),
    /// A VM-level KVM ioctl failed.
    #[error("{what} failed: {source}")]
    Kvm {
        /// Which ioctl.
        what: &'static str,
        /// Underlying error.
        source: kvm_ioctls::Error,
    },
    /// Platform devices.
    #[error(transparent)]
    Platform(#[from] platform::PlatformError),
    /// The PCI segment.
    #[error(transparent)]
    PciHost(#[from] pci_host::PciHostError),
    /// Passthrough devices.
    #[error(transparent)]
    Passthrough(#[from] passthrough::PassthroughError),
    /// vCPU registers.
    #[error(transparent)]
    Regs(#[from] regs::RegsError),
    /// The event loop.
    #[error(transparent)]
    EventLoop(#[from] event_loop::EventLoopError),
    /// Threads, eventfds, epoll.
    #[error("{what}: {source}")]
    Os {
        /// What was attempted.
        what: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
}

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

/// A built VM, ready to run.
struct Vm {
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
    guest: &GuestImage,
    mem: &GuestMemoryMmap,
    layout: &boot::MemoryLayout,
    cpus: u8,
) -> Result<BootCpu, VmError> {
    match guest {
        GuestImage::Linux {
            kernel,
            initramfs,
            cmdline,
        } => {
            let spec = boot::BootSpec {
                kernel,
                initramfs: initramfs.as_deref(),
                cmdline,
            };
            let acpi = boot::acpi::AcpiConfig::new(u32::from(cpus), layout);
            let loaded = boot::load_guest(mem, layout, &spec, &acpi)?;
            Ok(BootCpu::Kernel(loaded.cpu))
        }
        GuestImage::RealModePayload(code) => {
            mem.write_slice(code, GuestAddress(PAYLOAD_ADDR))
                .map_err(|e| {
                    VmError::Config(format!("payload does not fit in guest memory: {e}"))
                })?;
            Ok(BootCpu::RealMode {
                entry: PAYLOAD_ADDR,
            })
        }
    }
}

/// Builds the VM: the linear recipe.
fn build(kvm: &Kvm, config: &VmConfig) -> Result<Vm, VmError> {
    if config.cpus == 0 {
        return Err(VmError::Config("--cpus must be at least 1".into()));
    }
    let max = kvm.get_max_vcpus().min(255);
    if usize::from(config.cpus) > max {
        return Err(VmError::Config(format!(
            "--cpus {} is more than this host's KVM allows ({max})",
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
        },
    )?;

    let boot_cpu = load_guest(&config.guest, &mem, &layout, config.cpus)?;

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
    Ok(Vm {
        vcpus,
        platform,
        _pci: pci,
        buses,
        events,
        _passthrough: passthrough,
        _vm: vm,
        _memory: mem,
    })
}

impl Vm {
    /// Runs the vCPUs and the event loop until the guest or the host stops the VM.
    fn run(self, serial: &SerialMode) -> Result<Outcome, VmError> {
        let os = |what| move |source| VmError::Os { what, source };
        let stdin = match serial {
            SerialMode::Stdio => Some((std::io::stdin().as_raw_fd(), self.platform.serial.clone())),
            _ => None,
        };
        let main_loop = VmmLoop::new(stdin, self.events.clone(), SignalFd::new()?);
        let outcome = main_loop.outcome();
        let subscriber: Arc<Mutex<dyn MutEventSubscriber + Send>> = Arc::new(Mutex::new(main_loop));
        let mut manager = EventManager::<Arc<Mutex<dyn MutEventSubscriber + Send>>>::new()
            .map_err(|e| VmError::Os {
                what: "creating the event loop",
                source: std::io::Error::other(format!("{e:?}")),
            })?;
        manager.add_subscriber(subscriber);
        let threads = vcpu::spawn_all(self.vcpus, self.buses.clone(), self.events.clone())
            .map_err(os("starting vCPU threads"))?;
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

/// Builds and runs the VM described by `config`, rebuilding it on guest reboot when
/// `on_reboot` is `Restart`. Checks that the host KVM can run the guest first.
pub fn run(config: &VmConfig) -> Result<Outcome, VmError> {
    let kvm = kvm_host::open()?;
    if matches!(config.guest, GuestImage::Linux { .. }) {
        kvm_host::check_runs_stock_linux(Path::new("/sys/module"))?;
    }
    event_loop::block_stop_signals()?;
    vcpu::install_kick_handler().map_err(|e| VmError::Os {
        what: "installing the vCPU kick signal handler",
        source: std::io::Error::from_raw_os_error(e.errno()),
    })?;
    loop {
        let vm = build(&kvm, config)?;
        let outcome = vm.run(&config.serial)?;
        match (outcome, config.on_reboot) {
            (Outcome::Reset, OnReboot::Restart) => {
                log::info!("guest rebooted: restarting the VM");
                continue;
            }
            (o, _) => return Ok(o),
        }
    }
}
