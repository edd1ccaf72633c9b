//! Conduit's VMM: VM lifecycle, vCPUs, CLI and API.
//!
//! A VM is described by [`config::VmConfig`] and built by [`vm::run`] in one linear recipe.

pub mod cli;
pub mod config;
pub mod cpuid;
pub mod event_loop;
pub mod host;
pub mod kvm_hooks;
pub mod kvm_host;
pub mod logger;
pub mod memory;
pub mod passthrough;
pub mod pci_host;
pub mod platform;
pub mod regs;
pub mod vcpu;
pub mod vm;
