//! A VM's main thread: waits (event-manager/epoll) for host input for the guest's console,
//! for the vCPUs and devices to report power-off, reset or failure, and for the host's own
//! requests ([`HostControl`]: stop, reboot). Process signals are the embedding program's
//! business: [`block_stop_signals`] and [`wait_stop_signal`] help the CLI with them.

use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use devices::serial::SerialDevice;
use event_manager::{EventOps, Events, MutEventSubscriber};
use serde::Serialize;
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::EventFd;

use crate::vcpu::VmEvents;

const TAG_STDIN: u32 = 1;
const TAG_POWEROFF: u32 = 2;
const TAG_RESET: u32 = 3;
const TAG_FAILED: u32 = 4;
const TAG_HOST_STOP: u32 = 5;
const TAG_HOST_REBOOT: u32 = 6;

/// Why the VM stopped. In JSON: `{"reason": "power-off"}`, `{"reason": "signal", "detail": 15}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "reason", content = "detail", rename_all = "kebab-case")]
pub enum Outcome {
    /// The guest powered off.
    PowerOff,
    /// The guest rebooted (or the host asked for a reboot).
    Reset,
    /// The VMM got SIGINT or SIGTERM (set by the CLI, which handles signals).
    Signal(i32),
    /// A vCPU, or a thread working for the VM (DMA-mapping its RAM), failed; the detail says what.
    VcpuFailed(String),
    /// The host stopped the VM without the guest's consent: a shutdown that timed out, or
    /// a kill.
    ForcedOff,
}

/// Requests from the host (API, CLI, library user) to a running VM's main loop.
pub struct HostControl {
    stop: EventFd,
    stop_requested: AtomicBool,
    reboot: EventFd,
    reboot_requested: AtomicBool,
}

impl HostControl {
    /// Fresh, unsignalled requests.
    pub fn new() -> std::io::Result<Self> {
        Ok(Self {
            stop: EventFd::new(libc::EFD_NONBLOCK)?,
            stop_requested: AtomicBool::new(false),
            reboot: EventFd::new(libc::EFD_NONBLOCK)?,
            reboot_requested: AtomicBool::new(false),
        })
    }

    /// Stops the VM now ([`Outcome::ForcedOff`]).
    pub fn request_stop(&self) {
        self.stop_requested.store(true, Ordering::Release);
        if let Err(e) = self.stop.write(1) {
            log::error!("cannot ask the VM loop to stop: {e}");
        }
    }

    /// Stops the VM as a reset ([`Outcome::Reset`]) that is rebuilt whatever the
    /// `on_reboot` policy.
    pub fn request_reboot(&self) {
        self.reboot_requested.store(true, Ordering::Release);
        if let Err(e) = self.reboot.write(1) {
            log::error!("cannot ask the VM loop to reboot: {e}");
        }
    }

    /// Whether [`Self::request_stop`] was called: a run that ended otherwise at the same
    /// moment (the guest reset) must not be rebuilt, or the stop would be lost.
    pub fn stop_requested(&self) -> bool {
        self.stop_requested.load(Ordering::Acquire)
    }

    /// Whether [`Self::request_reboot`] was called (and clears it).
    pub fn take_reboot_request(&self) -> bool {
        self.reboot_requested.swap(false, Ordering::AcqRel)
    }
}

/// Errors setting up the loop.
#[derive(Debug, thiserror::Error)]
pub enum EventLoopError {
    /// signalfd / sigprocmask failed.
    #[error("cannot set up signal handling: {0}")]
    Signals(#[source] std::io::Error),
}

/// Signals that stop the VM.
pub const STOP_SIGNALS: [i32; 2] = [libc::SIGINT, libc::SIGTERM];

/// The set of [`STOP_SIGNALS`].
fn stop_signal_set() -> libc::sigset_t {
    // SAFETY: sigset_t is plain data; sigemptyset initialises it and sigaddset only adds
    // valid signal numbers to it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Blocks SIGINT/SIGTERM in the calling thread (and so in threads it spawns afterwards).
pub fn block_stop_signals() -> Result<(), EventLoopError> {
    let set = stop_signal_set();
    // SAFETY: pthread_sigmask only reads the initialised set.
    unsafe {
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(EventLoopError::Signals(std::io::Error::from_raw_os_error(
                rc,
            )));
        }
    }
    Ok(())
}

/// Waits for SIGINT or SIGTERM (blocked beforehand with [`block_stop_signals`]) and returns
/// its number.
pub fn wait_stop_signal() -> Result<i32, EventLoopError> {
    let set = stop_signal_set();
    // SAFETY: sigwait reads the initialised set and writes the signal number into a local.
    unsafe {
        let mut sig: libc::c_int = 0;
        let rc = libc::sigwait(&set, &mut sig);
        if rc != 0 {
            return Err(EventLoopError::Signals(std::io::Error::from_raw_os_error(
                rc,
            )));
        }
        Ok(sig)
    }
}

/// The main loop's single subscriber.
pub struct VmmLoop {
    stdin: Option<(RawFd, Arc<Mutex<SerialDevice>>)>,
    events: Arc<VmEvents>,
    control: Arc<HostControl>,
    outcome: Arc<Mutex<Option<Outcome>>>,
}

impl VmmLoop {
    /// A loop forwarding `stdin` (when given) to the serial device and obeying `control`.
    pub fn new(
        stdin: Option<(RawFd, Arc<Mutex<SerialDevice>>)>,
        events: Arc<VmEvents>,
        control: Arc<HostControl>,
    ) -> Self {
        Self {
            stdin,
            events,
            control,
            outcome: Arc::new(Mutex::new(None)),
        }
    }

    /// Where the loop publishes why the VM must stop (first reason wins).
    pub fn outcome(&self) -> Arc<Mutex<Option<Outcome>>> {
        self.outcome.clone()
    }

    fn stop(&self, o: Outcome) {
        self.outcome
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get_or_insert(o);
    }

    fn forward_input(&mut self, ops: &mut EventOps) {
        let Some((fd, serial)) = &self.stdin else {
            return;
        };
        let mut buf = [0u8; 64];
        // SAFETY: reading into a local buffer from an fd we were given and keep open.
        let n = unsafe { libc::read(*fd, buf.as_mut_ptr().cast(), buf.len()) };
        if n <= 0 {
            // EOF or error: stop watching stdin, the guest keeps running.
            let _ = ops.remove(Events::empty_raw(*fd));
            self.stdin = None;
            return;
        }
        let mut uart = serial.lock().unwrap_or_else(|p| p.into_inner());
        match uart.enqueue_input(&buf[..n as usize]) {
            Ok(k) if k < n as usize => log::warn!(
                "serial: guest FIFO full, dropped {} input bytes",
                n as usize - k
            ),
            Ok(_) => {}
            Err(e) => log::warn!("serial input: {e}"),
        }
    }
}

impl MutEventSubscriber for VmmLoop {
    fn process(&mut self, events: Events, ops: &mut EventOps) {
        match events.data() {
            TAG_STDIN => self.forward_input(ops),
            TAG_POWEROFF => {
                let _ = self.events.poweroff.read();
                self.stop(Outcome::PowerOff);
            }
            TAG_RESET => {
                let _ = self.events.reset.read();
                self.stop(Outcome::Reset);
            }
            TAG_FAILED => {
                let _ = self.events.failed.read();
                let msg = self
                    .events
                    .failure
                    .lock()
                    .ok()
                    .and_then(|f| f.clone())
                    .unwrap_or_else(|| "a vCPU failed".into());
                self.stop(Outcome::VcpuFailed(msg));
            }
            TAG_HOST_STOP => {
                let _ = self.control.stop.read();
                self.stop(Outcome::ForcedOff);
            }
            TAG_HOST_REBOOT => {
                let _ = self.control.reboot.read();
                self.stop(Outcome::Reset);
            }
            _ => {}
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        if let Some((fd, _)) = &self.stdin {
            // A regular file or /dev/null as stdin cannot be polled (EPERM): the guest
            // then simply gets no console input, which is what such a caller wants.
            if ops
                .add(Events::with_data_raw(*fd, TAG_STDIN, EventSet::IN))
                .is_err()
            {
                log::debug!("stdin (fd {fd}) cannot be polled: no console input for the guest");
                self.stdin = None;
            }
        }
        let mut add = |fd: RawFd, tag: u32| {
            if let Err(e) = ops.add(Events::with_data_raw(fd, tag, EventSet::IN)) {
                log::error!("event loop: cannot watch fd {fd}: {e:?}");
            }
        };
        add(self.events.poweroff.as_raw_fd(), TAG_POWEROFF);
        add(self.events.reset.as_raw_fd(), TAG_RESET);
        add(self.events.failed.as_raw_fd(), TAG_FAILED);
        add(self.control.stop.as_raw_fd(), TAG_HOST_STOP);
        add(self.control.reboot.as_raw_fd(), TAG_HOST_REBOOT);
    }
}
