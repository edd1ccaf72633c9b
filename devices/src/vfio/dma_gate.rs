//! Whether guest RAM is DMA-mapped in the IOMMU yet. The vmm maps guest RAM in the
//! background while the guest boots (pinning a large guest takes seconds to minutes); a
//! device cannot master DMA, nor send MSI/MSI-X messages, before the guest sets Bus Master
//! Enable in its command register, so that config write is where a passthrough device
//! waits for the mapping ([`DmaGate::wait`]). The IOMMU refuses DMA to unmapped addresses
//! anyway: the gate keeps a device that obeys Bus Master Enable from seeing those faults.

use std::sync::{Condvar, Mutex};

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    Pending,
    Open,
    Failed(String),
}

/// Shared by the thread that maps guest RAM and the devices that wait for it.
#[derive(Debug)]
pub struct DmaGate {
    state: Mutex<State>,
    changed: Condvar,
}

impl DmaGate {
    /// A gate that is closed until [`Self::open`] or [`Self::fail`].
    pub fn pending() -> Self {
        Self {
            state: Mutex::new(State::Pending),
            changed: Condvar::new(),
        }
    }

    fn set(&self, state: State) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if *s == State::Pending {
            *s = state;
        }
        self.changed.notify_all();
    }

    /// Guest RAM is mapped: every waiter goes on.
    pub fn open(&self) {
        self.set(State::Open);
    }

    /// Mapping guest RAM failed with `reason`: every waiter gets it.
    pub fn fail(&self, reason: String) {
        self.set(State::Failed(reason));
    }

    /// Whether the mapping is still under way.
    pub fn is_pending(&self) -> bool {
        *self.state.lock().unwrap_or_else(|p| p.into_inner()) == State::Pending
    }

    /// Blocks until guest RAM is mapped (`Ok`) or its mapping failed (`Err` with the reason).
    pub fn wait(&self) -> Result<(), String> {
        let s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let s = self
            .changed
            .wait_while(s, |s| *s == State::Pending)
            .unwrap_or_else(|p| p.into_inner());
        match &*s {
            State::Failed(reason) => Err(reason.clone()),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use super::*;

    #[test]
    fn waiters_block_until_the_gate_opens() {
        let gate = Arc::new(DmaGate::pending());
        assert!(gate.is_pending());
        let waiter = {
            let gate = gate.clone();
            std::thread::spawn(move || gate.wait())
        };
        std::thread::sleep(Duration::from_millis(50));
        assert!(
            !waiter.is_finished(),
            "a waiter went on before the gate opened"
        );
        gate.open();
        assert_eq!(waiter.join().unwrap(), Ok(()));
        assert!(!gate.is_pending());
        // Later waiters do not block.
        assert_eq!(gate.wait(), Ok(()));
    }

    #[test]
    fn a_failure_reaches_every_waiter_and_stays() {
        let gate = Arc::new(DmaGate::pending());
        let waiters: Vec<_> = (0..3)
            .map(|_| {
                let gate = gate.clone();
                std::thread::spawn(move || gate.wait())
            })
            .collect();
        gate.fail("out of locked memory".into());
        for w in waiters {
            assert_eq!(w.join().unwrap(), Err("out of locked memory".into()));
        }
        // The first outcome is final.
        gate.open();
        assert_eq!(gate.wait(), Err("out of locked memory".into()));
    }
}
