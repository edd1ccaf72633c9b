//! Guest boot: memory layout, kernel and initramfs loading, boot parameters, e820 and ACPI.
//!
//! The crate only touches guest memory (vm-memory); it knows nothing of KVM. The vmm plans
//! the layout, creates guest memory from it, then lets this crate fill that memory and hand
//! back the boot vCPU's register values:
//!
//! ```text
//! let layout = boot::memory::MemoryLayout::plan(ram_bytes, phys_bits)?;
//! let mem = GuestMemoryMmap::from_ranges(&layout.ram_regions())?;
//! let acpi = boot::acpi::AcpiConfig::new(num_cpus, &layout);
//! let spec = boot::BootSpec { kernel: &kernel_path, initramfs: None, cmdline: "console=ttyS0" };
//! let guest = boot::load_guest(&mem, &layout, &spec, &acpi)?;
//! // guest.cpu: rip, rsp, rsi/rbx, cr0/cr3/cr4/efer, GDT/IDT, segments -> KVM_SET_[S]REGS
//! ```
//!
//! The steps are public on their own too:
//! [`kernel::load`] → [`cmdline::write`] → [`initramfs::load`] → [`e820::build`] →
//! [`acpi::write_tables`] → [`params::write_linux_boot_params`] or
//! [`params::write_pvh_start_info`] → [`x86::setup_boot_cpu`].
//!
//! Fixed addresses are in [`layout`]. Power-off contract with the vmm's PM device: the guest
//! writes `(S5_SLP_TYP << 10) | PM1_CNT_SLP_EN` to `PM1A_CNT_PORT` (see [`layout`]).

pub mod acpi;
pub mod cmdline;
pub mod e820;
pub mod initramfs;
pub mod kernel;
pub mod layout;
pub mod memory;
pub mod params;
pub mod x86;

use std::fs::File;
use std::path::Path;

use vm_memory::{GuestAddress, GuestMemoryBackend};

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
    /// ACPI tables.
    #[error(transparent)]
    Acpi(#[from] acpi::Error),
    /// Boot CPU structures.
    #[error(transparent)]
    X86(#[from] x86::Error),
}

/// What to boot.
#[derive(Clone, Copy, Debug)]
pub struct BootSpec<'a> {
    /// bzImage or ELF vmlinux.
    pub kernel: &'a Path,
    /// Optional initramfs.
    pub initramfs: Option<&'a Path>,
    /// Kernel command line.
    pub cmdline: &'a str,
}

/// Result of [`load_guest`].
#[derive(Clone, Copy, Debug)]
pub struct LoadedGuest {
    /// Boot vCPU registers.
    pub cpu: x86::BootCpuState,
    /// The kernel as loaded.
    pub kernel: LoadedKernel,
    /// Where the command line is.
    pub cmdline: Placement,
    /// Where the initramfs is, if any.
    pub initramfs: Option<Placement>,
    /// Address of the ACPI RSDP.
    pub rsdp: GuestAddress,
}

/// Loads everything a guest needs to boot into `mem` (planned by `layout`): kernel, command
/// line, initramfs, ACPI tables, boot parameters (zero page or PVH start info), GDT/IDT and
/// page tables; returns the boot vCPU state. File errors name the file.
pub fn load_guest<M: GuestMemoryBackend>(
    mem: &M,
    layout: &MemoryLayout,
    spec: &BootSpec<'_>,
    acpi: &acpi::AcpiConfig,
) -> Result<LoadedGuest, Error> {
    let mut kernel_file = File::open(spec.kernel).map_err(|source| kernel::Error::Io {
        path: spec.kernel.to_owned(),
        source,
    })?;
    let kernel = kernel::load(mem, &mut kernel_file, spec.kernel)?;
    let cmdline = cmdline::write(mem, spec.cmdline, &kernel)?;
    let initramfs = match spec.initramfs {
        Some(path) => {
            let mut file = File::open(path).map_err(|source| initramfs::Error::Io {
                path: path.to_owned(),
                source,
            })?;
            Some(initramfs::load(mem, layout, &mut file, path, &kernel)?)
        }
        None => None,
    };
    let e820 = e820::build(layout);
    let rsdp = acpi::write_tables(mem, acpi)?;
    let boot_info = match kernel.mode {
        BootMode::Linux64 => {
            params::write_linux_boot_params(mem, &kernel, cmdline, initramfs, &e820, rsdp)?
        }
        BootMode::Pvh => params::write_pvh_start_info(mem, cmdline, initramfs, &e820, rsdp)?,
    };
    let cpu = x86::setup_boot_cpu(mem, &kernel, boot_info)?;
    Ok(LoadedGuest {
        cpu,
        kernel,
        cmdline,
        initramfs,
        rsdp,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use vm_memory::{Bytes, GuestMemoryMmap};

    /// A file in a per-test temporary directory, removed on drop.
    struct TempFile(std::path::PathBuf);

    impl TempFile {
        fn new(name: &str, bytes: &[u8]) -> Self {
            let dir = std::env::temp_dir().join(format!("boot-test-{}", std::process::id()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join(name);
            std::fs::write(&path, bytes).unwrap();
            TempFile(path)
        }
    }

    impl Drop for TempFile {
        fn drop(&mut self) {
            let _ = std::fs::remove_file(&self.0);
        }
    }

    fn guest(ram: u64) -> (MemoryLayout, GuestMemoryMmap) {
        let l = MemoryLayout::plan(ram, 40).unwrap();
        let m = GuestMemoryMmap::from_ranges(&l.ram_regions()).unwrap();
        (l, m)
    }

    #[test]
    fn load_guest_bzimage_end_to_end() {
        let (l, m) = guest(256 << 20);
        let kernel = TempFile::new("e2e-bzimage", &kernel::testimg::bzimage(0x4000));
        let initrd = TempFile::new("e2e-initrd", &[7u8; 10000]);
        let spec = BootSpec {
            kernel: &kernel.0,
            initramfs: Some(&initrd.0),
            cmdline: "console=ttyS0 reboot=k panic=-1",
        };
        let g = load_guest(&m, &l, &spec, &acpi::AcpiConfig::new(2, &l)).unwrap();
        assert_eq!(g.kernel.mode, BootMode::Linux64);
        assert_eq!(g.cpu.rip, layout::HIMEM_START + 0x200);
        assert_eq!(g.cpu.rsi, layout::ZERO_PAGE_START);
        assert_eq!(g.cpu.cr3, layout::PML4_START);
        let initrd_at = g.initramfs.unwrap();
        assert_eq!(initrd_at.len, 10000);
        assert!(initrd_at.addr.0 >= g.kernel.kernel_end.0);
        assert!(initrd_at.addr.0 + 10000 <= 256 << 20);
        // The zero page points at what was written.
        let bp: linux_loader::loader::bootparam::boot_params =
            m.read_obj(GuestAddress(g.cpu.rsi)).unwrap();
        assert_eq!({ bp.hdr.cmd_line_ptr } as u64, g.cmdline.addr.0);
        assert_eq!({ bp.hdr.ramdisk_image } as u64, initrd_at.addr.0);
        assert_eq!({ bp.acpi_rsdp_addr }, g.rsdp.0);
        let mut sig = [0u8; 8];
        m.read_slice(&mut sig, g.rsdp).unwrap();
        assert_eq!(&sig, b"RSD PTR ");
    }

    #[test]
    fn load_guest_pvh_end_to_end() {
        let (l, m) = guest(128 << 20);
        let kernel = TempFile::new(
            "e2e-vmlinux",
            &kernel::testimg::elf(0x100_0000, 0x1000, Some(0x100_0010)),
        );
        let spec = BootSpec {
            kernel: &kernel.0,
            initramfs: None,
            cmdline: "console=ttyS0",
        };
        let g = load_guest(&m, &l, &spec, &acpi::AcpiConfig::new(1, &l)).unwrap();
        assert_eq!(g.kernel.mode, BootMode::Pvh);
        assert_eq!((g.cpu.rip, g.cpu.rbx), (0x100_0010, layout::PVH_INFO_START));
        let magic: u32 = m.read_obj(GuestAddress(layout::PVH_INFO_START)).unwrap();
        assert_eq!(magic, 0x336e_c578);
    }

    #[test]
    fn load_guest_missing_files_are_named() {
        let (l, m) = guest(128 << 20);
        let spec = BootSpec {
            kernel: Path::new("/nonexistent/vmlinuz"),
            initramfs: None,
            cmdline: "",
        };
        let err = load_guest(&m, &l, &spec, &acpi::AcpiConfig::new(1, &l)).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("kernel /nonexistent/vmlinuz: cannot read"),
            "{err}"
        );

        let kernel = TempFile::new("e2e-bzimage-2", &kernel::testimg::bzimage(0x1000));
        let spec = BootSpec {
            kernel: &kernel.0,
            initramfs: Some(Path::new("/nonexistent/initrd")),
            cmdline: "",
        };
        let err = load_guest(&m, &l, &spec, &acpi::AcpiConfig::new(1, &l)).unwrap_err();
        assert!(
            err.to_string().starts_with("initramfs /nonexistent/initrd"),
            "{err}"
        );
    }
}
