//! INTx of a passthrough device, for guests or devices without MSI/MSI-X: VFIO signals an
//! eventfd (and masks the line) on each interrupt; KVM asserts the level-triggered GSI from
//! it, and on the guest's EOI writes the resample eventfd, which VFIO takes as "unmask".
//! Nothing of this passes through the VMM.

use std::os::fd::AsRawFd;
use std::sync::Arc;

use vmm_sys_util::eventfd::EventFd;

use super::irq::{IrqAction, IrqSetter, INTX_IRQ_INDEX};
use crate::vm_hooks::IrqRouting;

/// The host side of a device's INTx line.
pub struct Intx {
    trigger: EventFd,
    resample: EventFd,
    gsi: u32,
    routing: Arc<dyn IrqRouting>,
    setter: Box<dyn IrqSetter>,
    enabled: bool,
    name: String,
}

impl Intx {
    /// INTx of device `name` wired to `gsi` (not yet enabled).
    pub fn new(
        name: &str,
        gsi: u32,
        routing: Arc<dyn IrqRouting>,
        setter: Box<dyn IrqSetter>,
    ) -> std::io::Result<Self> {
        Ok(Self {
            trigger: EventFd::new(libc::EFD_NONBLOCK)?,
            resample: EventFd::new(libc::EFD_NONBLOCK)?,
            gsi,
            routing,
            setter,
            enabled: false,
            name: format!("{name} INTx"),
        })
    }

    /// The GSI the line is routed to.
    pub fn gsi(&self) -> u32 {
        self.gsi
    }

    /// Whether INTx is armed on the host.
    pub fn enabled(&self) -> bool {
        self.enabled
    }

    /// Arms INTx: KVM irqfd with resample, then VFIO trigger and unmask eventfds.
    pub fn enable(&mut self) -> Result<(), String> {
        if self.enabled {
            return Ok(());
        }
        self.routing
            .register_irqfd_with_resample(&self.trigger, &self.resample, self.gsi)
            .map_err(|e| format!("{}: {e}", self.name))?;
        let armed = self
            .setter
            .set_irqs_action(
                INTX_IRQ_INDEX,
                IrqAction::Trigger,
                0,
                &[self.trigger.as_raw_fd()],
            )
            .and_then(|_| {
                self.setter.set_irqs_action(
                    INTX_IRQ_INDEX,
                    IrqAction::Unmask,
                    0,
                    &[self.resample.as_raw_fd()],
                )
            });
        if let Err(e) = armed {
            let _ = self.routing.unregister_irqfd(&self.trigger, self.gsi);
            let _ = self.setter.set_irqs(INTX_IRQ_INDEX, 0, &[]);
            return Err(format!("{}: arming on the host: {e}", self.name));
        }
        self.enabled = true;
        log::debug!("{} armed on GSI {}", self.name, self.gsi);
        Ok(())
    }

    /// Disarms INTx (before MSI/MSI-X can be enabled on the host, and at teardown).
    pub fn disable(&mut self) {
        if !self.enabled {
            return;
        }
        self.enabled = false;
        if let Err(e) = self.setter.set_irqs(INTX_IRQ_INDEX, 0, &[]) {
            log::warn!("{}: disarming on the host: {e}", self.name);
        }
        if let Err(e) = self.routing.unregister_irqfd(&self.trigger, self.gsi) {
            log::warn!("{}: {e}", self.name);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::vfio::irq::tests::{Log, Setter};

    #[test]
    fn enable_wires_kvm_then_vfio_and_disable_undoes_it() {
        let log = Arc::new(Log::default());
        let mut intx =
            Intx::new("00:06.0", 18, log.clone(), Box::new(Setter(log.clone()))).unwrap();
        intx.enable().unwrap();
        intx.enable().unwrap();
        assert!(intx.enabled());
        intx.disable();
        intx.disable();
        assert_eq!(
            log.0.lock().unwrap().clone(),
            vec![
                "irqfd+resample 18",
                "vfio idx=0 start=0 E",
                "vfio idx=0 start=0 E",
                "vfio idx=0 start=0 ",
                "irqfd- 18",
            ]
        );
    }
}
