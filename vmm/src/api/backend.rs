//! The real [`Backend`]: at most one [`Vm`] per VMM process.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::handlers::{ApiError, Backend, HostQuery};
use crate::config::VmConfig;
use crate::event_loop::Outcome;
use crate::host::inventory::{self, ListFilter};
use crate::host::sysfs::PciId;
use crate::host::HostRoot;
use crate::seccomp::VmSeccomp;
use crate::vm::{Vm, VmError, VmInfo, VmState};

/// Maps a [`VmError`] to its HTTP answer: invalid configuration 400, wrong state 409,
/// anything else (host, KVM, device failures) 500.
pub fn vm_error(what: &str, e: VmError) -> ApiError {
    match e {
        VmError::InvalidConfig(c) => {
            ApiError::bad_request("invalid VM configuration", c.to_string())
        }
        VmError::Config(c) => ApiError::bad_request("invalid VM configuration", c),
        VmError::State { .. } => ApiError::conflict(e.to_string()),
        other => ApiError::internal(format!("{what} failed"), other.to_string()),
    }
}

fn no_vm() -> ApiError {
    ApiError::conflict("no VM: create one with PUT /api/v1/vm.create")
}

/// Holds the VMM's VM (if any) for the API.
#[derive(Default)]
pub struct VmBackend {
    slot: Mutex<Option<Arc<Vm>>>,
    host: Option<HostRoot>,
    /// How VMs created through the API are confined (the built-in filters, `on`, when
    /// unset).
    seccomp: Option<VmSeccomp>,
}

impl VmBackend {
    /// No VM yet (`conduit serve`).
    pub fn new() -> Self {
        Self::default()
    }

    /// Serving `vm`, created by the caller (`conduit run --api-socket`).
    pub fn with_vm(vm: Arc<Vm>) -> Self {
        Self {
            slot: Mutex::new(Some(vm)),
            host: None,
            seccomp: None,
        }
    }

    /// Creates VMs with `seccomp` (the CLI gives its spawner, so that VMs booted from API
    /// threads run under the `vmm` filter, not theirs).
    pub fn with_seccomp(mut self, seccomp: VmSeccomp) -> Self {
        self.seccomp = Some(seccomp);
        self
    }

    /// Reads the host for `GET /host` under `root` instead of `/` (tests).
    pub fn with_host_root(mut self, root: HostRoot) -> Self {
        self.host = Some(root);
        self
    }

    fn slot(&self) -> MutexGuard<'_, Option<Arc<Vm>>> {
        self.slot.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The VM, without holding the slot's lock while it works.
    fn vm(&self) -> Result<Arc<Vm>, ApiError> {
        self.slot().clone().ok_or_else(no_vm)
    }
}

impl Backend for VmBackend {
    fn create(&self, config: VmConfig) -> Result<(), ApiError> {
        let mut slot = self.slot();
        if let Some(vm) = slot.as_ref() {
            return Err(ApiError::conflict(format!(
                "a VM exists already (it is {}): delete it first with PUT /api/v1/vm.delete",
                vm.state()
            )));
        }
        let vm = match &self.seccomp {
            Some(s) => Vm::create_with(config, s.clone()),
            None => Vm::create(config),
        };
        *slot = Some(Arc::new(vm.map_err(|e| vm_error("create", e))?));
        Ok(())
    }

    fn boot(&self) -> Result<(), ApiError> {
        self.vm()?.boot().map_err(|e| vm_error("boot", e))
    }

    fn info(&self) -> Result<VmInfo, ApiError> {
        Ok(self.vm()?.info())
    }

    fn shutdown(&self, timeout: Duration) -> Result<Outcome, ApiError> {
        self.vm()?
            .shutdown(timeout)
            .map_err(|e| vm_error("shutdown", e))
    }

    fn reboot(&self) -> Result<(), ApiError> {
        self.vm()?.reboot().map_err(|e| vm_error("reboot", e))
    }

    fn delete(&self) -> Result<(), ApiError> {
        let mut slot = self.slot();
        let state = slot.as_ref().ok_or_else(no_vm)?.state();
        if matches!(state, VmState::Booting | VmState::Running) {
            return Err(ApiError::conflict(format!(
                "cannot delete: the VM is {state}; shut it down first with PUT /api/v1/vm.shutdown"
            )));
        }
        // Not running: dropping it only reaps its finished thread.
        slot.take();
        Ok(())
    }

    fn shutdown_vmm(&self) {
        if let Some(vm) = self.slot().clone() {
            if matches!(vm.state(), VmState::Booting | VmState::Running) {
                if let Err(e) = vm.kill() {
                    log::warn!("stopping the VM for vmm.shutdown: {e}");
                }
            }
        }
    }

    fn host(&self, query: &HostQuery) -> Result<serde_json::Value, ApiError> {
        let id = query
            .id
            .as_deref()
            .map(PciId::parse)
            .transpose()
            .map_err(|e| ApiError::bad_request("invalid query", e.to_string()))?;
        let root = self.host.clone().unwrap_or_else(HostRoot::system);
        let reports = inventory::list(
            &root,
            &ListFilter {
                all_classes: query.all_classes,
                id,
            },
        )
        .map_err(|e| ApiError::internal("host inventory failed", e.to_string()))?;
        serde_json::to_value(reports)
            .map_err(|e| ApiError::internal("cannot serialise the inventory", e.to_string()))
    }
}
