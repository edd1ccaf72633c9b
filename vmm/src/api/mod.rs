//! The REST API on a unix socket (`conduit serve`, `conduit run --api-socket`), documented
//! in `resources/openapi.json`:
//!
//! | route | does |
//! |---|---|
//! | `PUT /api/v1/vm.create` | body: a VmConfig (JSON); 204 |
//! | `PUT /api/v1/vm.boot` | builds and starts the VM; 204 |
//! | `GET /api/v1/vm.info` | state, config, devices (host/guest address, IOMMU group, BARs, armed MSI-X vectors), memory, vCPUs, boot times |
//! | `PUT /api/v1/vm.shutdown` | optional body `{"timeout_secs": N}` (default 30): ACPI power button, forced off after N s; 200 `{"outcome": ...}` |
//! | `PUT /api/v1/vm.reboot` | hard reset (rebuild); 204 |
//! | `PUT /api/v1/vm.delete` | forgets a VM that is not running; 204 |
//! | `GET /api/v1/vmm.ping` | `{"version", "api", "pid"}` |
//! | `PUT /api/v1/vmm.shutdown` | stops any VM, answers 204, then the server exits |
//! | `GET /api/v1/host[?class=all][&id=V:D]` | as `conduit host list --json` |
//!
//! Errors are `{"error": ..., "detail": ...}`: 400 malformed or invalid (the detail names
//! the field), 404 unknown route, 405 wrong method, 408 request too slow, 409 wrong state,
//! 411 no Content-Length, 413 body over 64 KiB, 431 head over 8 KiB, 500 the operation
//! failed on the host, 503 too many requests queued.
//!
//! Pieces: [`http`] (parsing, limits), [`handlers`] (routes over a [`Backend`] trait, so
//! they are tested without KVM), [`backend`] (the real backend on [`crate::vm::Vm`]),
//! [`server`] (socket, threads).

pub mod backend;
pub mod handlers;
pub mod http;
pub mod server;

#[cfg(test)]
mod docs_tests;
#[cfg(test)]
mod tests;

pub use backend::VmBackend;
pub use handlers::{ApiError, Backend, HostQuery, Reply, Route, ROUTES};
pub use server::{bind_socket, Server, ServerError};
