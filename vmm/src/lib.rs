//! Conduit's VMM: VM lifecycle, vCPUs, CLI and API.
//!
//! Used as a library: describe a VM with [`config::VmConfig`] (serde; the same JSON the
//! API and `conduit run --config` take), then [`vm::Vm::create`], [`vm::Vm::boot`],
//! [`vm::Vm::info`], [`vm::Vm::shutdown`] / [`vm::Vm::wait`]; [`vm::run`] does create,
//! boot and wait in one call. `examples/boot.rs` boots a VM this way. [`api`] serves the
//! same operations over a unix socket and [`ctl`] is its client.

pub mod api;
pub mod bar_placement;
pub mod cli;
pub mod coalesced_io;
pub mod config;
pub mod cpuid;
pub mod ctl;
pub mod event_loop;
pub mod host;
pub mod kvm_hooks;
pub mod kvm_host;
pub mod log_limit;
pub mod logger;
pub mod memory;
pub mod passthrough;
pub mod pci_host;
pub mod platform;
pub mod regs;
pub mod seccomp;
pub mod vcpu;
pub mod vm;
