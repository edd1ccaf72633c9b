//! An eventfd that devices signal; the vmm registers it as a KVM irqfd or watches it.

use std::io;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

/// A cloneable eventfd handle implementing `vm_superio::Trigger`.
#[derive(Clone, Debug)]
pub struct EventFdTrigger(Arc<EventFd>);

impl EventFdTrigger {
    /// Wraps an eventfd.
    pub fn new(evt: EventFd) -> Self {
        Self(Arc::new(evt))
    }

    /// The underlying eventfd (to register with KVM or an epoll loop).
    pub fn event_fd(&self) -> &EventFd {
        &self.0
    }
}

impl vm_superio::Trigger for EventFdTrigger {
    type E = io::Error;

    fn trigger(&self) -> io::Result<()> {
        self.0.write(1)
    }
}
