//! vCPU threads: register set-up for the boot CPU, and the run loop that dispatches PIO and
//! MMIO exits to the buses. Everything else (interrupts, timers, HLT) stays inside KVM.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::thread::JoinHandle;

use devices::Bus;
use kvm_ioctls::{VcpuExit, VcpuFd};
use pci::{BarKind, BarMove};
use vmm_sys_util::eventfd::EventFd;

use crate::coalesced_io::CoalescedRing;
use crate::seccomp::{SeccompFilters, ThreadKind};

/// The PIO and MMIO buses shared by all vCPUs. BAR moves take the write lock between exits.
#[derive(Default)]
pub struct IoBuses {
    /// Port I/O.
    pub pio: RwLock<Bus>,
    /// Memory-mapped I/O.
    pub mmio: RwLock<Bus>,
    /// BAR moves queued by config writes (made while a bus lock is held).
    pub bar_moves: Arc<Mutex<Vec<BarMove>>>,
    /// Writes KVM queued instead of exiting (0xCF8), when this KVM can.
    pub coalesced: OnceLock<CoalescedRing>,
}

impl IoBuses {
    /// Replays the writes KVM queued since the last exit, so the exit being handled sees
    /// the state the guest created before it.
    fn replay_coalesced(&self) {
        if let Some(ring) = self.coalesced.get() {
            ring.replay(&(&self.pio, &self.mmio));
        }
    }

    /// Moves the bus ranges of BARs the guest reprogrammed. Called by a vCPU thread after
    /// a write exit, when it holds no bus lock.
    pub fn apply_bar_moves(&self) {
        let moves: Vec<BarMove> = {
            let mut q = self.bar_moves.lock().unwrap_or_else(|p| p.into_inner());
            if q.is_empty() {
                return;
            }
            q.drain(..).collect()
        };
        for mv in moves {
            let bus = if mv.kind == BarKind::Io {
                &self.pio
            } else {
                &self.mmio
            };
            let mut bus = bus.write().unwrap_or_else(|p| p.into_inner());
            if let Err(e) = bus.relocate(mv.old_addr, mv.new_addr) {
                log::warn!(
                    "guest moved BAR{} from {:#x} to {:#x}: {e}",
                    mv.index,
                    mv.old_addr,
                    mv.new_addr
                );
            }
        }
    }
}

/// How the guest (or a vCPU) asked the VM to stop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopReason {
    /// The guest powered off.
    PowerOff,
    /// The guest asked for a reset (reboot).
    Reset,
    /// A vCPU failed; the message is in [`VmEvents::failure`].
    VcpuFailed,
}

/// Signals from vCPU threads and devices to the VMM's main loop.
pub struct VmEvents {
    /// Guest entered S5 (ACPI) or KVM reported a shutdown system event.
    pub poweroff: EventFd,
    /// Guest reset: i8042, triple fault, or a reset system event.
    pub reset: EventFd,
    /// A vCPU stopped with an error.
    pub failed: EventFd,
    /// The first vCPU failure, for the error message.
    pub failure: Mutex<Option<String>>,
    /// Set when the VM is being torn down; vCPU threads leave their loop.
    pub stop: AtomicBool,
}

impl VmEvents {
    /// Fresh, unsignalled events.
    pub fn new() -> std::io::Result<Self> {
        let ev = || EventFd::new(libc::EFD_NONBLOCK);
        Ok(Self {
            poweroff: ev()?,
            reset: ev()?,
            failed: ev()?,
            failure: Mutex::new(None),
            stop: AtomicBool::new(false),
        })
    }

    /// Stops the VM as failed with `msg` (the first failure's message is kept).
    pub fn fail(&self, msg: String) {
        if let Ok(mut f) = self.failure.lock() {
            f.get_or_insert(msg);
        }
        signal(&self.failed);
    }
}

fn signal(evt: &EventFd) {
    if let Err(e) = evt.write(1) {
        log::error!("cannot signal the VMM main loop: {e}");
    }
}

/// Signal used to kick vCPU threads out of KVM_RUN at teardown.
pub fn kick_signal() -> i32 {
    vmm_sys_util::signal::SIGRTMIN()
}

extern "C" fn on_kick(_: libc::c_int, _: *mut libc::siginfo_t, _: *mut libc::c_void) {}

/// Installs the (empty) handler of the kick signal so it interrupts KVM_RUN with EINTR.
pub fn install_kick_handler() -> Result<(), vmm_sys_util::errno::Error> {
    vmm_sys_util::signal::register_signal_handler(kick_signal(), on_kick)
}

/// What the loop did with one exit.
enum Flow {
    Continue,
    Stop,
}

fn handle_exit(index: u32, exit: VcpuExit<'_>, buses: &IoBuses, events: &VmEvents) -> Flow {
    if matches!(
        exit,
        VcpuExit::IoIn(..) | VcpuExit::IoOut(..) | VcpuExit::MmioRead(..) | VcpuExit::MmioWrite(..)
    ) {
        buses.replay_coalesced();
    }
    match exit {
        VcpuExit::IoIn(port, data) => {
            if !read_lock(&buses.pio).read(u64::from(port), data) {
                data.fill(0xff);
            }
        }
        VcpuExit::IoOut(port, data) => {
            read_lock(&buses.pio).write(u64::from(port), data);
            buses.apply_bar_moves();
        }
        VcpuExit::MmioRead(addr, data) => {
            if !read_lock(&buses.mmio).read(addr, data) {
                data.fill(0xff);
            }
        }
        VcpuExit::MmioWrite(addr, data) => {
            read_lock(&buses.mmio).write(addr, data);
            buses.apply_bar_moves();
        }
        VcpuExit::Shutdown => {
            // A triple fault: on a PC that resets the machine. Said at warn level: it is
            // usually a guest crash, which the guest cannot report itself. (Its registers
            // are not worth printing: on AMD, KVM has already reset them.)
            log::warn!("vCPU {index}: the guest triple-faulted: the machine resets");
            signal(&events.reset);
            return Flow::Stop;
        }
        VcpuExit::SystemEvent(kind, _) => {
            match kind {
                kvm_bindings::KVM_SYSTEM_EVENT_SHUTDOWN => signal(&events.poweroff),
                kvm_bindings::KVM_SYSTEM_EVENT_RESET => signal(&events.reset),
                other => events.fail(format!("vCPU {index}: unexpected system event {other}")),
            }
            return Flow::Stop;
        }
        VcpuExit::FailEntry(reason, cpu) => {
            events.fail(format!(
                "vCPU {index}: KVM could not enter the guest (hardware entry failure reason {reason:#x} on host CPU {cpu})"
            ));
            return Flow::Stop;
        }
        VcpuExit::InternalError => {
            events.fail(format!(
                "vCPU {index}: KVM internal error (emulation failure)"
            ));
            return Flow::Stop;
        }
        other => {
            events.fail(format!("vCPU {index}: unexpected exit {other:?}"));
            return Flow::Stop;
        }
    }
    Flow::Continue
}

fn read_lock(bus: &RwLock<Bus>) -> std::sync::RwLockReadGuard<'_, Bus> {
    bus.read().unwrap_or_else(|p| p.into_inner())
}

/// Runs `vcpu` until the guest stops it, a fatal exit, or `events.stop`.
pub fn run_loop(index: u32, mut vcpu: VcpuFd, buses: &IoBuses, events: &VmEvents) {
    while !events.stop.load(Ordering::Acquire) {
        match vcpu.run() {
            Ok(exit) => {
                if let Flow::Stop = handle_exit(index, exit, buses, events) {
                    break;
                }
            }
            Err(e) if e.errno() == libc::EINTR || e.errno() == libc::EAGAIN => {
                vcpu.set_kvm_immediate_exit(0);
            }
            Err(e) => {
                events.fail(format!("vCPU {index}: KVM_RUN failed: {e}"));
                break;
            }
        }
    }
}

/// Starts vCPU threads named `vcpu<N>`; each installs the `vcpu` seccomp filter of
/// `filters` before its first KVM_RUN (and stops the VM as failed if it cannot).
pub fn spawn_all(
    vcpus: Vec<VcpuFd>,
    buses: Arc<IoBuses>,
    events: Arc<VmEvents>,
    filters: &Arc<SeccompFilters>,
) -> std::io::Result<Vec<JoinHandle<()>>> {
    let mut threads = Vec::with_capacity(vcpus.len());
    for (i, vcpu) in vcpus.into_iter().enumerate() {
        let (buses, events, filters) = (buses.clone(), events.clone(), filters.clone());
        let index = i as u32;
        threads.push(
            std::thread::Builder::new()
                .name(format!("vcpu{index}"))
                .spawn(move || {
                    if let Err(e) = filters.apply(ThreadKind::Vcpu) {
                        events.fail(format!("vCPU {index}: {e}"));
                        return;
                    }
                    run_loop(index, vcpu, &buses, &events)
                })?,
        );
    }
    Ok(threads)
}

/// Stops and joins vCPU threads, kicking them out of KVM_RUN until they leave.
pub fn stop_all(threads: Vec<JoinHandle<()>>, events: &VmEvents) {
    use std::os::unix::thread::JoinHandleExt;
    events.stop.store(true, Ordering::Release);
    for t in threads {
        while !t.is_finished() {
            // SAFETY: the pthread id belongs to a thread we spawned and have not joined yet.
            unsafe { libc::pthread_kill(t.as_pthread_t(), kick_signal()) };
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        if t.join().is_err() {
            log::error!("a vCPU thread panicked");
        }
    }
}
