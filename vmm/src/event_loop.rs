//! The VMM's main thread: waits (event-manager/epoll) for host input for the guest's console,
//! for the vCPUs and devices to report power-off, reset or failure, and for SIGINT/SIGTERM.

use std::fs::File;
use std::io::Read;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::sync::{Arc, Mutex};

use devices::serial::SerialDevice;
use event_manager::{EventOps, Events, MutEventSubscriber};
use vmm_sys_util::epoll::EventSet;

use crate::vcpu::VmEvents;

const TAG_STDIN: u32 = 1;
const TAG_POWEROFF: u32 = 2;
const TAG_RESET: u32 = 3;
const TAG_FAILED: u32 = 4;
const TAG_SIGNAL: u32 = 5;

/// Why the VM stopped.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The guest powered off.
    PowerOff,
    /// The guest rebooted.
    Reset,
    /// The VMM got SIGINT or SIGTERM.
    Signal(i32),
    /// A vCPU failed.
    VcpuFailed(String),
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

/// A signalfd for SIGINT/SIGTERM. The signals must be blocked in every thread (see
/// [`block_stop_signals`]) before any thread is spawned.
pub struct SignalFd(File);

/// Blocks SIGINT/SIGTERM in the calling thread (and so in threads it spawns afterwards).
pub fn block_stop_signals() -> Result<(), EventLoopError> {
    // SAFETY: sigset_t is plain data; sigemptyset/sigaddset initialise it; pthread_sigmask only
    // reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for s in STOP_SIGNALS {
            libc::sigaddset(&mut set, s);
        }
        let rc = libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        if rc != 0 {
            return Err(EventLoopError::Signals(std::io::Error::from_raw_os_error(
                rc,
            )));
        }
    }
    Ok(())
}

impl SignalFd {
    /// A non-blocking signalfd for [`STOP_SIGNALS`].
    pub fn new() -> Result<Self, EventLoopError> {
        // SAFETY: as above for the set; signalfd returns a new fd we take ownership of.
        let fd = unsafe {
            let mut set: libc::sigset_t = std::mem::zeroed();
            libc::sigemptyset(&mut set);
            for s in STOP_SIGNALS {
                libc::sigaddset(&mut set, s);
            }
            libc::signalfd(-1, &set, libc::SFD_NONBLOCK | libc::SFD_CLOEXEC)
        };
        if fd < 0 {
            return Err(EventLoopError::Signals(std::io::Error::last_os_error()));
        }
        // SAFETY: fd is a fresh descriptor owned by nobody else.
        Ok(Self(unsafe { File::from_raw_fd(fd) }))
    }

    /// Reads one pending signal number, if any.
    fn take(&mut self) -> Option<i32> {
        let mut info = [0u8; std::mem::size_of::<libc::signalfd_siginfo>()];
        match self.0.read(&mut info) {
            Ok(n) if n == info.len() => {
                Some(i32::from_ne_bytes([info[0], info[1], info[2], info[3]]))
            }
            _ => None,
        }
    }
}

/// The main loop's single subscriber.
pub struct VmmLoop {
    stdin: Option<(RawFd, Arc<Mutex<SerialDevice>>)>,
    events: Arc<VmEvents>,
    signals: SignalFd,
    outcome: Arc<Mutex<Option<Outcome>>>,
}

impl VmmLoop {
    /// A loop forwarding `stdin` (when given) to the serial device.
    pub fn new(
        stdin: Option<(RawFd, Arc<Mutex<SerialDevice>>)>,
        events: Arc<VmEvents>,
        signals: SignalFd,
    ) -> Self {
        Self {
            stdin,
            events,
            signals,
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
            TAG_SIGNAL => {
                if let Some(sig) = self.signals.take() {
                    self.stop(Outcome::Signal(sig));
                }
            }
            _ => {}
        }
    }

    fn init(&mut self, ops: &mut EventOps) {
        let mut add = |fd: RawFd, tag: u32| {
            if let Err(e) = ops.add(Events::with_data_raw(fd, tag, EventSet::IN)) {
                log::error!("event loop: cannot watch fd {fd}: {e:?}");
            }
        };
        if let Some((fd, _)) = &self.stdin {
            add(*fd, TAG_STDIN);
        }
        add(self.events.poweroff.as_raw_fd(), TAG_POWEROFF);
        add(self.events.reset.as_raw_fd(), TAG_RESET);
        add(self.events.failed.as_raw_fd(), TAG_FAILED);
        add(self.signals.0.as_raw_fd(), TAG_SIGNAL);
    }
}
