//! A VM's life as a library: [`Vm::create`] checks a [`VmConfig`] (values and files) and
//! holds nothing on the host; [`Vm::boot`] builds the VM with the linear recipe
//! (`build.rs`) on a VM thread and returns once the vCPUs run; [`Vm::info`],
//! [`Vm::shutdown`] (ACPI power button, then force after a timeout), [`Vm::reboot`],
//! [`Vm::kill`] and [`Vm::wait`] work from any thread. Dropping a [`Vm`] stops it.
//!
//! ```no_run
//! use std::time::Duration;
//! use vmm::config::VmConfig;
//! use vmm::vm::Vm;
//!
//! let mut config = VmConfig::linux("/boot/vmlinuz");
//! config.memory_bytes = 1 << 30;
//! let vm = Vm::create(config)?;
//! vm.boot()?;
//! println!("{}", serde_json::to_string_pretty(&vm.info()).unwrap());
//! let outcome = vm.shutdown(Duration::from_secs(30))?;
//! println!("stopped: {outcome:?}");
//! # Ok::<(), vmm::vm::VmError>(())
//! ```
//!
//! Teardown keeps the recipe's order: vCPU threads stopped and joined, devices dropped,
//! then the VM fd, then guest memory; the VM is `shutdown` only once that is done, so a
//! passthrough device is free for another VM when [`Vm::wait`] or [`Vm::shutdown`]
//! returns. A guest reboot rebuilds the VM when `on_reboot` is `restart` (and always after
//! [`Vm::reboot`]); otherwise the VM stops with [`Outcome::Reset`].
//!
//! Process signals are left to the embedding program (the CLI blocks SIGINT/SIGTERM and
//! calls [`Vm::kill`] on them).
//!
//! seccomp: the VM thread runs under the `vmm` filter from its start (every build, the
//! event loop, teardown, rebuilds) and each vCPU thread adds the `vcpu` filter before its
//! first `KVM_RUN` ([`crate::seccomp`]). [`Vm::create`] uses the built-in filters in `on`
//! mode; [`Vm::create_with`] takes others (the CLI's `--seccomp`, and a spawner so that a VM
//! booted from an API thread does not inherit the `api` filter).

mod build;
mod info;

use std::sync::mpsc;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant, SystemTime};

use devices::acpi_pm::AcpiPm;
use pci::{BarKind, PciDevice};

use crate::config::{ConfigError, OnReboot, VmConfig};
use crate::event_loop::{self, HostControl, Outcome};
use crate::seccomp::{SeccompError, SeccompFilters, VmSeccomp};
use crate::{kvm_host, memory, passthrough, pci_host, platform, regs};

pub use info::{
    BarInfo, BootInfo, DeviceInfo, DmaRangeInfo, MemoryInfo, RamRegion, StopInfo, VcpuInfo, VmInfo,
    VmState,
};

/// Guest-physical address where a payload is loaded (CS=0, IP=0x1000).
pub const PAYLOAD_ADDR: u64 = 0x1000;

/// Everything that can stop a VM from being created, built or run.
#[derive(Debug, thiserror::Error)]
pub enum VmError {
    /// The configuration is invalid (names the field).
    #[error(transparent)]
    InvalidConfig(#[from] ConfigError),
    /// The operation does not fit the VM's state (boot twice, shut down a stopped VM).
    #[error("cannot {op}: the VM is {state}")]
    State {
        /// What was asked.
        op: &'static str,
        /// The state it met.
        state: VmState,
    },
    /// The VM stopped on an error (a rebuild after reboot failed, the VM thread died).
    #[error("{0}")]
    Failed(String),
    /// Host KVM problem.
    #[error(transparent)]
    KvmHost(#[from] kvm_host::KvmHostError),
    /// The configuration does not fit this host (e.g. more vCPUs than KVM allows).
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
    /// seccomp filters.
    #[error(transparent)]
    Seccomp(#[from] SeccompError),
    /// Threads, eventfds, epoll.
    #[error("{what}: {source}")]
    Os {
        /// What was attempted.
        what: &'static str,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Handles into the running VM, published by the VM thread and cleared by it before
/// teardown (so nothing here outlives the VM).
struct Running {
    control: Arc<HostControl>,
    pm: Arc<Mutex<AcpiPm>>,
    devices: Vec<build::AttachedDevice>,
    ram: Vec<(u64, u64)>,
}

/// Boot times of the current or last run.
struct BootTimes {
    started_at: SystemTime,
    started: Instant,
    ended: Option<Instant>,
    build: Duration,
}

struct Life {
    state: VmState,
    run: Option<Running>,
    stopped: Option<StopInfo>,
    boots: u32,
    times: Option<BootTimes>,
}

struct Shared {
    life: Mutex<Life>,
    changed: Condvar,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Life> {
        self.life.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn update(&self, f: impl FnOnce(&mut Life)) {
        f(&mut self.lock());
        self.changed.notify_all();
    }

    fn finish(&self, stopped: StopInfo) {
        // For embedders (`conduit serve`): why a VM stopped, in the log as well as in
        // vm.info. Info level: `conduit run` says it itself.
        log::info!(
            "the VM stopped: {}",
            serde_json::to_string(&stopped).unwrap_or_default()
        );
        self.update(|l| {
            l.state = VmState::Shutdown;
            l.run = None;
            l.stopped = Some(stopped);
            if let Some(t) = &mut l.times {
                t.ended.get_or_insert_with(Instant::now);
            }
        });
    }
}

/// A VM: its configuration and, once booted, the thread that runs it.
pub struct Vm {
    config: VmConfig,
    seccomp: VmSeccomp,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl Vm {
    /// Checks `config` (values, and that the kernel, initramfs or payload files exist).
    /// Nothing is reserved on the host until [`Vm::boot`]. The VM's threads run under the
    /// built-in seccomp filters (`on`).
    pub fn create(config: VmConfig) -> Result<Vm, VmError> {
        Self::create_with(config, VmSeccomp::builtin()?)
    }

    /// As [`Vm::create`], with the VM's threads confined as `seccomp` says.
    pub fn create_with(config: VmConfig, seccomp: VmSeccomp) -> Result<Vm, VmError> {
        config.validate()?;
        config.check_files()?;
        Ok(Vm {
            config,
            seccomp,
            shared: Arc::new(Shared {
                life: Mutex::new(Life {
                    state: VmState::Created,
                    run: None,
                    stopped: None,
                    boots: 0,
                    times: None,
                }),
                changed: Condvar::new(),
            }),
            thread: Mutex::new(None),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &VmConfig {
        &self.config
    }

    /// The lifecycle state.
    pub fn state(&self) -> VmState {
        self.shared.lock().state
    }

    /// Waits while the VM is being built or torn down (running without handles) and
    /// returns the lock.
    fn settled(&self) -> MutexGuard<'_, Life> {
        let l = self.shared.lock();
        self.shared
            .changed
            .wait_while(l, |l| {
                l.state == VmState::Booting || (l.state == VmState::Running && l.run.is_none())
            })
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Builds the VM and starts its vCPUs on background threads; returns once they run
    /// (or with the error that stopped the build, the VM then back in its former state).
    /// Allowed when the VM is `created` or `shutdown`.
    pub fn boot(&self) -> Result<(), VmError> {
        let previous = {
            let mut l = self.shared.lock();
            match l.state {
                VmState::Created | VmState::Shutdown => {
                    let p = l.state;
                    l.state = VmState::Booting;
                    p
                }
                state => return Err(VmError::State { op: "boot", state }),
            }
        };
        let restore = |e: VmError| {
            self.shared.update(|l| l.state = previous);
            Err(e)
        };
        let mut thread = self.thread.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(old) = thread.take() {
            // The last run's thread has finished (the VM is shut down): reap it.
            let _ = old.join();
        }
        let (ready_tx, ready_rx) = mpsc::channel();
        let shared = self.shared.clone();
        let config = self.config.clone();
        let filters = self.seccomp.filters().clone();
        let handle = match self
            .seccomp
            .spawn_vmm_thread("vm", move |confined| match confined {
                Ok(()) => vm_thread(&shared, &config, &filters, ready_tx),
                Err(e) => {
                    let _ = ready_tx.send(Err(e.into()));
                }
            }) {
            Ok(h) => h,
            Err(source) => {
                return restore(VmError::Os {
                    what: "starting the VM thread",
                    source,
                })
            }
        };
        match ready_rx.recv() {
            Ok(Ok(())) => {
                *thread = Some(handle);
                Ok(())
            }
            Ok(Err(e)) => {
                let _ = handle.join();
                restore(e)
            }
            Err(_) => {
                let _ = handle.join();
                restore(VmError::Failed(
                    "the VM thread ended before the VM was built".into(),
                ))
            }
        }
    }

    /// Everything known about the VM now.
    pub fn info(&self) -> VmInfo {
        let l = self.shared.lock();
        let devices = l
            .run
            .as_ref()
            .map(|r| r.devices.iter().filter_map(device_info).collect())
            .unwrap_or_default();
        let regions = l
            .run
            .as_ref()
            .map(|r| {
                r.ram
                    .iter()
                    .map(|(a, s)| RamRegion {
                        guest_address: *a,
                        size: *s,
                    })
                    .collect()
            })
            .unwrap_or_default();
        let boot = l.times.as_ref().map(|t| BootInfo {
            started_at_unix_ms: t
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
            build_ms: t.build.as_millis() as u64,
            uptime_ms: t
                .ended
                .unwrap_or_else(Instant::now)
                .saturating_duration_since(t.started)
                .as_millis() as u64,
            boots: l.boots,
        });
        VmInfo {
            state: l.state,
            config: self.config.clone(),
            memory: MemoryInfo {
                bytes: self.config.memory_bytes,
                hugepages: self.config.hugepages,
                regions,
            },
            vcpus: VcpuInfo {
                count: self.config.cpus,
                running: if l.run.is_some() { self.config.cpus } else { 0 },
            },
            devices,
            boot,
            stopped: if l.state == VmState::Shutdown {
                l.stopped.clone()
            } else {
                None
            },
        }
    }

    /// Presses the ACPI power button and waits up to `timeout` for the guest to power off;
    /// then stops the VM by force ([`Outcome::ForcedOff`]). Returns how the VM stopped.
    pub fn shutdown(&self, timeout: Duration) -> Result<Outcome, VmError> {
        let deadline = Instant::now() + timeout;
        {
            let l = self.settled();
            match (&l.state, &l.run) {
                (VmState::Running, Some(r)) => {
                    r.pm.lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .press_power_button()
                }
                (state, _) => {
                    return Err(VmError::State {
                        op: "shut down",
                        state: *state,
                    })
                }
            }
        }
        let l = self.shared.lock();
        let remaining = deadline.saturating_duration_since(Instant::now());
        let (l, _) = self
            .shared
            .changed
            .wait_timeout_while(l, remaining, |l| l.state != VmState::Shutdown)
            .unwrap_or_else(|p| p.into_inner());
        let stopped = l.state == VmState::Shutdown;
        drop(l);
        if !stopped {
            log::info!("the guest did not power off within {timeout:?}: stopping it");
            match self.kill() {
                // It stopped by itself between the timeout and the kill.
                Err(VmError::State {
                    state: VmState::Shutdown,
                    ..
                }) => {}
                other => return other,
            }
        }
        self.wait()
    }

    /// Stops the VM now, without asking the guest; returns once it is torn down.
    pub fn kill(&self) -> Result<Outcome, VmError> {
        {
            let l = self.settled();
            match (&l.state, &l.run) {
                (VmState::Running, Some(r)) => r.control.request_stop(),
                (state, _) => {
                    return Err(VmError::State {
                        op: "stop",
                        state: *state,
                    })
                }
            }
        }
        self.wait()
    }

    /// Resets the VM (a hard reboot: the VM is torn down and built again from its
    /// configuration, whatever `on_reboot` says); returns once it runs again.
    pub fn reboot(&self) -> Result<(), VmError> {
        let boots = {
            let l = self.settled();
            match (&l.state, &l.run) {
                (VmState::Running, Some(r)) => r.control.request_reboot(),
                (state, _) => {
                    return Err(VmError::State {
                        op: "reboot",
                        state: *state,
                    })
                }
            }
            l.boots
        };
        let l = self.shared.lock();
        let l = self
            .shared
            .changed
            .wait_while(l, |l| l.boots == boots && l.state != VmState::Shutdown)
            .unwrap_or_else(|p| p.into_inner());
        match (&l.state, &l.stopped) {
            (VmState::Shutdown, Some(StopInfo::Error { detail, .. })) => {
                Err(VmError::Failed(format!("the reboot failed: {detail}")))
            }
            (VmState::Shutdown, stopped) => Err(VmError::Failed(format!(
                "the VM stopped instead of rebooting: {stopped:?}"
            ))),
            _ => Ok(()),
        }
    }

    /// Waits until the VM stops and returns why.
    pub fn wait(&self) -> Result<Outcome, VmError> {
        let l = self.shared.lock();
        if l.state == VmState::Created {
            return Err(VmError::State {
                op: "wait for the VM",
                state: l.state,
            });
        }
        let l = self
            .shared
            .changed
            .wait_while(l, |l| {
                matches!(l.state, VmState::Booting | VmState::Running)
            })
            .unwrap_or_else(|p| p.into_inner());
        match &l.stopped {
            _ if l.state == VmState::Created => {
                Err(VmError::Failed("the VM failed to boot".into()))
            }
            Some(StopInfo::Outcome(o)) => Ok(o.clone()),
            Some(StopInfo::Error { detail, .. }) => Err(VmError::Failed(detail.clone())),
            None => Err(VmError::Failed("the VM stopped for no known reason".into())),
        }
    }
}

impl Drop for Vm {
    fn drop(&mut self) {
        if matches!(self.state(), VmState::Booting | VmState::Running) {
            let _ = self.kill();
        }
        if let Some(t) = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = t.join();
        }
    }
}

fn bar_kind(kind: BarKind) -> &'static str {
    match kind {
        BarKind::Io => "io",
        BarKind::Mem32 => "mem32",
        BarKind::Mem64 => "mem64",
    }
}

fn device_info(d: &build::AttachedDevice) -> Option<DeviceInfo> {
    let dev = d.device.upgrade()?;
    let dev = dev.lock().unwrap_or_else(|p| p.into_inner());
    Some(DeviceInfo {
        host_address: d.host_address.clone(),
        guest_address: d.guest_address.clone(),
        iommu_group: d.iommu_group,
        bars: dev
            .bars()
            .into_iter()
            .map(|b| BarInfo {
                index: b.index,
                kind: bar_kind(b.kind),
                prefetchable: b.prefetchable,
                guest_address: b.addr,
                size: b.size,
            })
            .collect(),
        msix_vectors_armed: dev.armed_vectors(),
        p2p: dev.p2p(),
        p2p_dma: dev
            .p2p_ranges()
            .into_iter()
            .map(|r| DmaRangeInfo {
                bar: r.bar,
                iova: r.iova,
                size: r.size,
            })
            .collect(),
    })
}

/// The VM thread (under the `vmm` seccomp filter): builds, runs, tears down, and rebuilds
/// on reboot. The first build's result goes to `ready`; later failures end the VM as
/// `shutdown` with the error.
fn vm_thread(
    shared: &Shared,
    config: &VmConfig,
    filters: &Arc<SeccompFilters>,
    ready: mpsc::Sender<Result<(), VmError>>,
) {
    let mut ready = Some(ready);
    let fail = |ready: &mut Option<mpsc::Sender<_>>, e: VmError| match ready.take() {
        Some(tx) => {
            let _ = tx.send(Err(e));
        }
        None => shared.finish(StopInfo::Error {
            reason: "error",
            detail: e.to_string(),
        }),
    };
    let kvm = match kvm_host::open() {
        Ok(k) => k,
        Err(e) => return fail(&mut ready, e.into()),
    };
    loop {
        let started = Instant::now();
        let control = match HostControl::new() {
            Ok(c) => Arc::new(c),
            Err(source) => {
                return fail(
                    &mut ready,
                    VmError::Os {
                        what: "creating the VM's control eventfds",
                        source,
                    },
                )
            }
        };
        let mut vm = match build::build(&kvm, config) {
            Ok(vm) => vm,
            Err(e) => return fail(&mut ready, e),
        };
        let build_time = started.elapsed();
        shared.update(|l| {
            l.run = Some(Running {
                control: control.clone(),
                pm: vm.pm(),
                devices: std::mem::take(&mut vm.devices),
                ram: vm.ram.clone(),
            });
            l.state = VmState::Running;
            l.stopped = None;
            l.boots += 1;
            l.times = Some(BootTimes {
                started_at: SystemTime::now(),
                started: Instant::now(),
                ended: None,
                build: build_time,
            });
        });
        if let Some(tx) = ready.take() {
            let _ = tx.send(Ok(()));
        }
        let result = vm.run(&config.serial, control.clone(), filters);
        // Nothing may hold the VM's handles past this point: then tear it down in order.
        shared.update(|l| {
            l.run = None;
            if let Some(t) = &mut l.times {
                t.ended = Some(Instant::now());
            }
        });
        drop(vm);
        let host_reboot = control.take_reboot_request();
        match result {
            // A kill that raced with a guest reset: the host's stop wins.
            Ok(Outcome::Reset) if control.stop_requested() => {
                return shared.finish(StopInfo::Outcome(Outcome::ForcedOff))
            }
            Ok(Outcome::Reset) if host_reboot || config.on_reboot == OnReboot::Restart => {
                log::info!("guest rebooted: rebuilding the VM");
                shared.update(|l| l.state = VmState::Booting);
            }
            Ok(outcome) => return shared.finish(StopInfo::Outcome(outcome)),
            Err(e) => {
                return shared.finish(StopInfo::Error {
                    reason: "error",
                    detail: e.to_string(),
                })
            }
        }
    }
}

/// Builds and runs the VM described by `config` until it stops (rebuilding it on guest
/// reboot when `on_reboot` is `restart`): [`Vm::create`], [`Vm::boot`], [`Vm::wait`].
pub fn run(config: &VmConfig) -> Result<Outcome, VmError> {
    let vm = Vm::create(config.clone())?;
    vm.boot()?;
    vm.wait()
}
