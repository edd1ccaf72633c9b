//! MSI-X and MSI of a passthrough device: one eventfd per vector, handed to VFIO as the
//! vector's trigger and to KVM as an irqfd on the vector's GSI, so an interrupt goes device →
//! host IRQ → eventfd → guest without the VMM. Only vectors the guest has unmasked are armed.

use std::sync::Arc;

use pci::{MsiRoutes, RouteError, VectorRoute};
use vfio_bindings::bindings::vfio::{
    vfio_irq_set, VFIO_IRQ_SET_ACTION_TRIGGER, VFIO_IRQ_SET_ACTION_UNMASK,
    VFIO_IRQ_SET_DATA_EVENTFD, VFIO_IRQ_SET_DATA_NONE,
};
use vmm_sys_util::eventfd::EventFd;

use crate::vm_hooks::IrqRouting;

/// VFIO's IRQ index for MSI.
pub const MSI_IRQ_INDEX: u32 = 1;
/// VFIO's IRQ index for MSI-X.
pub const MSIX_IRQ_INDEX: u32 = 2;
/// `VFIO_DEVICE_SET_IRQS` = _IO(';', 100 + 10).
const VFIO_DEVICE_SET_IRQS: u64 = 0x3b6e;

/// VFIO's IRQ index for INTx.
pub const INTX_IRQ_INDEX: u32 = 0;

/// What a VFIO_DEVICE_SET_IRQS call sets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IrqAction {
    /// The eventfds VFIO signals on an interrupt.
    Trigger,
    /// The eventfds that unmask (INTx: the guest's EOI, through a KVM resample fd).
    Unmask,
}

/// Where VFIO_DEVICE_SET_IRQS goes (the device fd), abstracted for tests.
pub trait IrqSetter: Send + Sync {
    /// Sets triggers `fds` (-1 = none) for vectors `start..start+fds.len()` of `index`; with
    /// an empty `fds`, disables the whole index.
    fn set_irqs(&self, index: u32, start: u32, fds: &[i32]) -> std::io::Result<()> {
        self.set_irqs_action(index, IrqAction::Trigger, start, fds)
    }

    /// As [`Self::set_irqs`] for any action.
    fn set_irqs_action(
        &self,
        index: u32,
        action: IrqAction,
        start: u32,
        fds: &[i32],
    ) -> std::io::Result<()>;
}

/// The real setter: an ioctl on the VFIO device fd.
pub struct VfioIrqSetter(pub Arc<vfio_ioctls::VfioDevice>);

impl IrqSetter for VfioIrqSetter {
    fn set_irqs_action(
        &self,
        index: u32,
        action: IrqAction,
        start: u32,
        fds: &[i32],
    ) -> std::io::Result<()> {
        use std::os::fd::AsRawFd;
        let header = std::mem::size_of::<vfio_irq_set>();
        let mut buf = vec![0u32; header.div_ceil(4) + fds.len()];
        let set = vfio_irq_set {
            argsz: (header + 4 * fds.len()) as u32,
            flags: match action {
                IrqAction::Trigger => VFIO_IRQ_SET_ACTION_TRIGGER,
                IrqAction::Unmask => VFIO_IRQ_SET_ACTION_UNMASK,
            } | if fds.is_empty() {
                VFIO_IRQ_SET_DATA_NONE
            } else {
                VFIO_IRQ_SET_DATA_EVENTFD
            },
            index,
            start,
            count: fds.len() as u32,
            ..Default::default()
        };
        // SAFETY: `buf` holds at least `header` bytes, is u32-aligned (as vfio_irq_set is), and
        // `set` is plain data; the fd array follows the header as the ioctl expects.
        unsafe {
            std::ptr::write(buf.as_mut_ptr().cast::<vfio_irq_set>(), set);
        }
        for (i, fd) in fds.iter().enumerate() {
            buf[header / 4 + i] = *fd as u32;
        }
        // SAFETY: the argument is a valid vfio_irq_set of `argsz` bytes for this device fd.
        let rc =
            unsafe { libc::ioctl(self.0.as_raw_fd(), VFIO_DEVICE_SET_IRQS as _, buf.as_ptr()) };
        if rc < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }
}

struct Vector {
    evt: EventFd,
    gsi: Option<u32>,
    irqfd: bool,
    /// Given to VFIO as this vector's trigger.
    armed: bool,
}

/// The host side of a passthrough device's MSI-X (or MSI) vectors.
pub struct VfioVectors {
    /// VFIO IRQ index: [`MSIX_IRQ_INDEX`] or [`MSI_IRQ_INDEX`].
    index: u32,
    vectors: Vec<Vector>,
    routing: Arc<dyn IrqRouting>,
    setter: Box<dyn IrqSetter>,
    /// Vectors VFIO currently has enabled (0 = MSI-X off on the host).
    host_count: u32,
    /// Whether the host kernel can grow the vector count without disabling MSI-X.
    resizable: bool,
    /// The guest has MSI-X enabled: the device must be in MSI-X mode on the host too, even
    /// with no vector armed, because devices decide things at that moment (QEMU's nvme only
    /// uses a completion queue's vector if MSI-X was on when the queue was created).
    guest_enabled: bool,
    name: String,
}

impl VfioVectors {
    /// `count` vectors of VFIO IRQ `index` of device `name`.
    pub fn new(
        index: u32,
        name: &str,
        count: u16,
        routing: Arc<dyn IrqRouting>,
        setter: Box<dyn IrqSetter>,
        resizable: bool,
    ) -> std::io::Result<Self> {
        let mut vectors = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            vectors.push(Vector {
                evt: EventFd::new(libc::EFD_NONBLOCK)?,
                gsi: None,
                irqfd: false,
                armed: false,
            });
        }
        let kind = if index == MSI_IRQ_INDEX {
            "MSI"
        } else {
            "MSI-X"
        };
        Ok(Self {
            index,
            vectors,
            routing,
            setter,
            host_count: 0,
            resizable,
            guest_enabled: false,
            name: format!("{name} {kind}"),
        })
    }

    /// Vectors armed on the host (for `vm.info`).
    pub fn armed(&self) -> Vec<u16> {
        (0..self.vectors.len() as u16)
            .filter(|v| self.vectors[usize::from(*v)].armed)
            .collect()
    }

    fn err(&self, what: &str, e: impl std::fmt::Display) -> RouteError {
        RouteError::new(format!("{}: {what}", self.name), e.to_string())
    }

    /// Gives VFIO the triggers of all armed vectors (-1 for the others below the highest).
    fn sync_host(&mut self) -> Result<(), RouteError> {
        let count = self
            .vectors
            .iter()
            .rposition(|v| v.armed)
            .map_or(0, |i| i as u32 + 1);
        if count == 0 && self.guest_enabled {
            if self.host_count == 0 {
                // MSI-X mode on the host with vector 0 present but without a trigger.
                self.setter
                    .set_irqs(self.index, 0, &[-1])
                    .map_err(|e| self.err("enabling MSI-X", e))?;
                self.host_count = 1;
            }
            return Ok(());
        }
        if count == 0 {
            if self.host_count != 0 {
                self.setter
                    .set_irqs(self.index, 0, &[])
                    .map_err(|e| self.err("disabling MSI-X", e))?;
                self.host_count = 0;
            }
            return Ok(());
        }
        // Kernels without dynamic MSI-X allocation need MSI-X disabled to grow the count.
        if !self.resizable && self.host_count != 0 && count > self.host_count {
            self.setter
                .set_irqs(self.index, 0, &[])
                .map_err(|e| self.err("disabling MSI-X to grow it", e))?;
            self.host_count = 0;
        }
        use std::os::fd::AsRawFd;
        let fds: Vec<i32> = self.vectors[..count as usize]
            .iter()
            .map(|v| if v.armed { v.evt.as_raw_fd() } else { -1 })
            .collect();
        self.setter
            .set_irqs(self.index, 0, &fds)
            .map_err(|e| self.err(&format!("arming {count} vectors"), e))?;
        log::debug!(
            "{}: vectors armed on the host: {:?}",
            self.name,
            self.armed()
        );
        self.host_count = self.host_count.max(count);
        Ok(())
    }

    /// Follows the guest's MSI-X enable bit on the host.
    pub fn set_guest_enabled(&mut self, enabled: bool) -> Result<(), RouteError> {
        if enabled == self.guest_enabled {
            return Ok(());
        }
        self.guest_enabled = enabled;
        if !enabled {
            for v in &mut self.vectors {
                v.armed = false;
            }
        }
        self.sync_host()
    }

    /// Disarms everything (guest reset, teardown).
    pub fn shutdown(&mut self) {
        let _ = MsiRoutes::disable(self, &(0..self.vectors.len() as u16).collect::<Vec<_>>());
        let gsis: Vec<u32> = self
            .vectors
            .iter_mut()
            .filter_map(|v| v.gsi.take())
            .collect();
        if let Err(e) = self.routing.update_msi_routes(&[], &gsis) {
            log::warn!("{}: removing routes: {e}", self.name);
        }
        for g in gsis {
            self.routing.release_gsi(g);
        }
        for v in &mut self.vectors {
            v.armed = false;
        }
        self.guest_enabled = false;
        if let Err(e) = self.sync_host() {
            log::warn!("{e}");
        }
    }
}

impl MsiRoutes for VfioVectors {
    fn owner(&self) -> String {
        self.name.clone()
    }

    fn disable(&mut self, vectors: &[u16]) -> Result<(), RouteError> {
        for &v in vectors {
            let Some(vec) = self.vectors.get_mut(usize::from(v)) else {
                continue;
            };
            if let (true, Some(gsi)) = (vec.irqfd, vec.gsi) {
                self.routing
                    .unregister_irqfd(&vec.evt, gsi)
                    .map_err(|e| RouteError::new(format!("{} vector {v}", self.name), e.0))?;
                vec.irqfd = false;
            }
        }
        Ok(())
    }

    fn set_routes(&mut self, routes: &[VectorRoute]) -> Result<(), RouteError> {
        let mut set = Vec::with_capacity(routes.len());
        for r in routes {
            let Some(vec) = self.vectors.get_mut(usize::from(r.vector)) else {
                continue;
            };
            let gsi = match vec.gsi {
                Some(g) => g,
                None => {
                    let g = self
                        .routing
                        .allocate_gsi()
                        .map_err(|e| RouteError::new(format!("{} GSI", self.name), e.0))?;
                    vec.gsi = Some(g);
                    g
                }
            };
            set.push((gsi, r.message));
        }
        // Vectors with a GSI but no longer in the set lose their route (keep the GSI).
        let remove: Vec<u32> = self
            .vectors
            .iter()
            .enumerate()
            .filter(|(i, v)| v.gsi.is_some() && !routes.iter().any(|r| usize::from(r.vector) == *i))
            .filter_map(|(_, v)| v.gsi)
            .collect();
        log::debug!("{}: routes {set:x?}, removed GSIs {remove:?}", self.name);
        self.routing
            .update_msi_routes(&set, &remove)
            .map_err(|e| RouteError::new(format!("{} routes", self.name), e.0))
    }

    fn enable(&mut self, vectors: &[u16]) -> Result<(), RouteError> {
        let mut newly_armed = false;
        for &v in vectors {
            let name = &self.name;
            let Some(vec) = self.vectors.get_mut(usize::from(v)) else {
                continue;
            };
            let Some(gsi) = vec.gsi else { continue };
            if !vec.irqfd {
                self.routing
                    .register_irqfd(&vec.evt, gsi)
                    .map_err(|e| RouteError::new(format!("{name} vector {v}"), e.0))?;
                vec.irqfd = true;
            }
            if !vec.armed {
                vec.armed = true;
                newly_armed = true;
            }
        }
        if newly_armed {
            self.sync_host()?;
        }
        Ok(())
    }

    fn trigger(&mut self, vector: u16) -> Result<(), RouteError> {
        if let Some(v) = self.vectors.get(usize::from(vector)) {
            v.evt
                .write(1)
                .map_err(|e| RouteError::new(format!("{} vector {vector}", self.name), e))?;
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::vm_hooks::HookError;
    use pci::MsiMessage;
    use std::sync::Mutex;

    #[derive(Default)]
    pub(crate) struct Log(pub(crate) Mutex<Vec<String>>);

    impl IrqRouting for Log {
        fn allocate_gsi(&self) -> Result<u32, HookError> {
            let mut l = self.0.lock().unwrap();
            let n = l.iter().filter(|s| s.starts_with("alloc")).count() as u32;
            l.push(format!("alloc {}", 24 + n));
            Ok(24 + n)
        }
        fn release_gsi(&self, gsi: u32) {
            self.0.lock().unwrap().push(format!("release {gsi}"));
        }
        fn update_msi_routes(
            &self,
            set: &[(u32, MsiMessage)],
            remove: &[u32],
        ) -> Result<(), HookError> {
            let s: Vec<u32> = set.iter().map(|r| r.0).collect();
            self.0
                .lock()
                .unwrap()
                .push(format!("routes set={s:?} remove={remove:?}"));
            Ok(())
        }
        fn register_irqfd(&self, _: &EventFd, gsi: u32) -> Result<(), HookError> {
            self.0.lock().unwrap().push(format!("irqfd+ {gsi}"));
            Ok(())
        }
        fn register_irqfd_with_resample(
            &self,
            _: &EventFd,
            _: &EventFd,
            gsi: u32,
        ) -> Result<(), HookError> {
            self.0.lock().unwrap().push(format!("irqfd+resample {gsi}"));
            Ok(())
        }
        fn unregister_irqfd(&self, _: &EventFd, gsi: u32) -> Result<(), HookError> {
            self.0.lock().unwrap().push(format!("irqfd- {gsi}"));
            Ok(())
        }
    }

    pub(crate) struct Setter(pub(crate) Arc<Log>);
    impl IrqSetter for Setter {
        fn set_irqs_action(
            &self,
            index: u32,
            _action: IrqAction,
            start: u32,
            fds: &[i32],
        ) -> std::io::Result<()> {
            let shape: Vec<char> = fds
                .iter()
                .map(|f| if *f >= 0 { 'E' } else { '-' })
                .collect();
            self.0 .0.lock().unwrap().push(format!(
                "vfio idx={index} start={start} {}",
                shape.iter().collect::<String>()
            ));
            Ok(())
        }
    }

    fn route(v: u16) -> VectorRoute {
        VectorRoute {
            vector: v,
            message: MsiMessage {
                address: 0xfee0_0000,
                data: 0x30 + u32::from(v),
            },
        }
    }

    #[test]
    fn guest_msix_enable_puts_the_host_in_msix_mode_without_triggers() {
        let log = Arc::new(Log::default());
        let mut m = VfioVectors::new(
            MSIX_IRQ_INDEX,
            "00:02.0",
            4,
            log.clone(),
            Box::new(Setter(log.clone())),
            true,
        )
        .unwrap();
        m.set_guest_enabled(true).unwrap();
        m.set_routes(&[route(1)]).unwrap();
        m.enable(&[1]).unwrap();
        m.set_guest_enabled(false).unwrap();
        let got = log.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                "vfio idx=2 start=0 -",
                "alloc 24",
                "routes set=[24] remove=[]",
                "irqfd+ 24",
                "vfio idx=2 start=0 -E",
                "vfio idx=2 start=0 ",
            ]
        );
    }

    #[test]
    fn only_unmasked_vectors_are_armed_and_count_grows_by_reenabling() {
        let log = Arc::new(Log::default());
        let mut m = VfioVectors::new(
            MSIX_IRQ_INDEX,
            "00:02.0",
            9,
            log.clone(),
            Box::new(Setter(log.clone())),
            false,
        )
        .unwrap();
        m.set_routes(&[route(0)]).unwrap();
        m.enable(&[0]).unwrap();
        m.set_routes(&[route(0), route(2)]).unwrap();
        m.enable(&[2]).unwrap();
        assert_eq!(m.armed(), vec![0, 2]);
        m.disable(&[0]).unwrap();
        m.set_routes(&[route(2)]).unwrap();
        m.shutdown();
        let got = log.0.lock().unwrap().clone();
        assert_eq!(
            got,
            vec![
                "alloc 24",
                "routes set=[24] remove=[]",
                "irqfd+ 24",
                "vfio idx=2 start=0 E",
                "alloc 25",
                "routes set=[24, 25] remove=[]",
                "irqfd+ 25",
                "vfio idx=2 start=0 ",
                "vfio idx=2 start=0 E-E",
                "irqfd- 24",
                "routes set=[25] remove=[24]",
                "irqfd- 25",
                "routes set=[] remove=[24, 25]",
                "release 24",
                "release 25",
                "vfio idx=2 start=0 ",
            ]
        );
    }
}
