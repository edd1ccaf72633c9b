//! Guest boot: memory layout, kernel and initramfs loading, boot parameters, e820 and ACPI.

pub mod cmdline;
pub mod e820;
pub mod initramfs;
pub mod kernel;
pub mod layout;
pub mod memory;
pub mod params;
pub mod x86;

use vm_memory::GuestAddress;

pub use kernel::{BootMode, LoadedKernel};
pub use memory::MemoryLayout;

/// Something written into guest memory: where and how many bytes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Placement {
    /// Guest-physical address of the first byte.
    pub addr: GuestAddress,
    /// Length in bytes (for the command line: without the terminating NUL).
    pub len: usize,
}

/// Any error of this crate.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Memory layout planning.
    #[error(transparent)]
    Memory(#[from] memory::Error),
    /// Kernel loading.
    #[error(transparent)]
    Kernel(#[from] kernel::Error),
    /// Initramfs loading.
    #[error(transparent)]
    Initramfs(#[from] initramfs::Error),
    /// Command line.
    #[error(transparent)]
    Cmdline(#[from] cmdline::Error),
    /// Boot parameters.
    #[error(transparent)]
    Params(#[from] params::Error),
    /// Boot CPU structures.
    #[error(transparent)]
    X86(#[from] x86::Error),
}
