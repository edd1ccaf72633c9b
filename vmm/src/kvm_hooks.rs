//! The vmm's implementations of the device hooks over KVM: the VM-wide GSI routing table
//! (rebuilt whole on every change, because KVM_SET_GSI_ROUTING replaces it) with irqfds, and
//! memslots for device memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use devices::vm_hooks::{HookError, IrqRouting, MemslotMapper};
use kvm_bindings::{
    kvm_irq_routing_entry, kvm_userspace_memory_region, KvmIrqRouting, KVM_IRQCHIP_IOAPIC,
    KVM_IRQCHIP_PIC_MASTER, KVM_IRQCHIP_PIC_SLAVE, KVM_IRQ_ROUTING_IRQCHIP, KVM_IRQ_ROUTING_MSI,
};
use kvm_ioctls::VmFd;
use pci::MsiMessage;
use vmm_sys_util::eventfd::EventFd;

/// IOAPIC pins; MSI GSIs start after them.
const IOAPIC_PINS: u32 = 24;
/// KVM's limit on routing entries.
const MAX_GSI: u32 = 4096;

struct RoutingState {
    msi: BTreeMap<u32, MsiMessage>,
    free: Vec<u32>,
    next: u32,
}

/// The VM's GSI routing table: the legacy PIC/IOAPIC pins plus MSI routes.
pub struct GsiRouting {
    vm: Arc<VmFd>,
    state: Mutex<RoutingState>,
}

fn irqchip_entry(gsi: u32, chip: u32, pin: u32) -> kvm_irq_routing_entry {
    let mut e = kvm_irq_routing_entry {
        gsi,
        type_: KVM_IRQ_ROUTING_IRQCHIP,
        ..Default::default()
    };
    e.u.irqchip.irqchip = chip;
    e.u.irqchip.pin = pin;
    e
}

impl GsiRouting {
    /// The routing of a VM with an in-kernel irqchip.
    pub fn new(vm: Arc<VmFd>) -> Self {
        Self {
            vm,
            state: Mutex::new(RoutingState {
                msi: BTreeMap::new(),
                free: Vec::new(),
                next: IOAPIC_PINS,
            }),
        }
    }

    /// The whole table: what KVM_CREATE_IRQCHIP installs for GSIs 0-23, then MSI routes.
    fn entries(msi: &BTreeMap<u32, MsiMessage>) -> Vec<kvm_irq_routing_entry> {
        let mut v = Vec::with_capacity(40 + msi.len());
        for gsi in 0..16 {
            if gsi != 2 {
                let (chip, pin) = if gsi < 8 {
                    (KVM_IRQCHIP_PIC_MASTER, gsi)
                } else {
                    (KVM_IRQCHIP_PIC_SLAVE, gsi - 8)
                };
                v.push(irqchip_entry(gsi, chip, pin));
            }
        }
        for pin in 0..IOAPIC_PINS {
            v.push(irqchip_entry(pin, KVM_IRQCHIP_IOAPIC, pin));
        }
        for (gsi, m) in msi {
            let mut e = kvm_irq_routing_entry {
                gsi: *gsi,
                type_: KVM_IRQ_ROUTING_MSI,
                ..Default::default()
            };
            e.u.msi.address_lo = m.address as u32;
            e.u.msi.address_hi = (m.address >> 32) as u32;
            e.u.msi.data = m.data;
            v.push(e);
        }
        v
    }

    fn commit(&self, msi: &BTreeMap<u32, MsiMessage>) -> Result<(), HookError> {
        let entries = Self::entries(msi);
        let table = KvmIrqRouting::from_entries(&entries).map_err(|e| {
            HookError(format!(
                "GSI routing table of {} entries: {e:?}",
                entries.len()
            ))
        })?;
        self.vm
            .set_gsi_routing(&table)
            .map_err(|e| HookError(format!("KVM_SET_GSI_ROUTING: {e}")))
    }
}

impl IrqRouting for GsiRouting {
    fn allocate_gsi(&self) -> Result<u32, HookError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(g) = s.free.pop() {
            return Ok(g);
        }
        if s.next >= MAX_GSI {
            return Err(HookError(format!("all {MAX_GSI} GSIs are in use")));
        }
        s.next += 1;
        Ok(s.next - 1)
    }

    fn release_gsi(&self, gsi: u32) {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        s.msi.remove(&gsi);
        if gsi >= IOAPIC_PINS && !s.free.contains(&gsi) {
            s.free.push(gsi);
        }
    }

    fn update_msi_routes(
        &self,
        set: &[(u32, MsiMessage)],
        remove: &[u32],
    ) -> Result<(), HookError> {
        let mut s = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = s.msi.clone();
        for g in remove {
            next.remove(g);
        }
        for (g, m) in set {
            next.insert(*g, *m);
        }
        self.commit(&next)?;
        s.msi = next;
        Ok(())
    }

    fn register_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), HookError> {
        self.vm
            .register_irqfd(evt, gsi)
            .map_err(|e| HookError(format!("KVM_IRQFD (assign GSI {gsi}): {e}")))
    }

    fn register_irqfd_with_resample(
        &self,
        evt: &EventFd,
        resample: &EventFd,
        gsi: u32,
    ) -> Result<(), HookError> {
        self.vm
            .register_irqfd_with_resample(evt, resample, gsi)
            .map_err(|e| HookError(format!("KVM_IRQFD (assign GSI {gsi} with resample): {e}")))
    }

    fn unregister_irqfd(&self, evt: &EventFd, gsi: u32) -> Result<(), HookError> {
        self.vm
            .unregister_irqfd(evt, gsi)
            .map_err(|e| HookError(format!("KVM_IRQFD (deassign GSI {gsi}): {e}")))
    }
}

/// Memslots for device memory, numbered after the RAM slots.
pub struct DeviceMemslots {
    vm: Arc<VmFd>,
    slots: Mutex<(u32, Vec<u32>)>,
    regions: Mutex<BTreeMap<u32, kvm_userspace_memory_region>>,
}

impl DeviceMemslots {
    /// Slots from `first_slot` on.
    pub fn new(vm: Arc<VmFd>, first_slot: u32) -> Self {
        Self {
            vm,
            slots: Mutex::new((first_slot, Vec::new())),
            regions: Mutex::new(BTreeMap::new()),
        }
    }
}

impl MemslotMapper for DeviceMemslots {
    fn map(&self, gpa: u64, size: u64, host_addr: u64) -> Result<u32, HookError> {
        let slot = {
            let mut s = self.slots.lock().unwrap_or_else(|p| p.into_inner());
            match s.1.pop() {
                Some(n) => n,
                None => {
                    s.0 += 1;
                    s.0 - 1
                }
            }
        };
        let region = kvm_userspace_memory_region {
            slot,
            flags: 0,
            guest_phys_addr: gpa,
            memory_size: size,
            userspace_addr: host_addr,
        };
        // SAFETY: the host range is a live device mapping that the caller keeps until it
        // calls `unmap` for this slot.
        unsafe { self.vm.set_user_memory_region(region) }.map_err(|e| {
            self.slots
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .1
                .push(slot);
            HookError(format!(
                "KVM_SET_USER_MEMORY_REGION slot {slot} at {gpa:#x}+{size:#x}: {e}"
            ))
        })?;
        self.regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(slot, region);
        Ok(slot)
    }

    fn unmap(&self, slot: u32) -> Result<(), HookError> {
        let Some(mut region) = self
            .regions
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&slot)
        else {
            return Err(HookError(format!("memslot {slot} is not mapped")));
        };
        region.memory_size = 0;
        // SAFETY: a zero size deletes the slot; no host memory is referenced afterwards.
        unsafe { self.vm.set_user_memory_region(region) }
            .map_err(|e| HookError(format!("deleting memslot {slot}: {e}")))?;
        self.slots
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .1
            .push(slot);
        Ok(())
    }
}
