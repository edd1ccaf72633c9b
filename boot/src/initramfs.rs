//! Initramfs placement: as high as the kernel allows in low RAM, above the kernel.

use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend, ReadVolatile};

use crate::kernel::LoadedKernel;
use crate::layout::HIMEM_START;
use crate::memory::MemoryLayout;
use crate::Placement;

const PAGE: u64 = 0x1000;

/// Errors of loading the initramfs; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("initramfs {}: cannot read: {source}", path.display())]
    Io {
        /// Initramfs file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("initramfs {} is empty", path.display())]
    Empty {
        /// Initramfs file.
        path: PathBuf,
    },
    /// No room between the kernel and the highest address the kernel accepts.
    #[error(
        "initramfs {} ({} MiB) does not fit in guest memory below {limit:#x} ({} MiB free above \
         the kernel): give the guest more memory (--memory)",
        path.display(), size.div_ceil(1 << 20), free >> 20
    )]
    TooLarge {
        /// Initramfs file.
        path: PathBuf,
        /// Its size.
        size: u64,
        /// First address it must stay below.
        limit: u64,
        /// Bytes free between the kernel and `limit`.
        free: u64,
    },
    /// Copying into guest memory failed.
    #[error("initramfs {}: cannot copy into guest memory at {addr:#x}: {source}", path.display())]
    Memory {
        /// Initramfs file.
        path: PathBuf,
        /// Where.
        addr: u64,
        /// Underlying error.
        source: vm_memory::GuestMemoryError,
    },
}

/// Loads the initramfs read from `initramfs` (named `path` in errors) at the highest
/// page-aligned address below both the kernel's `initrd_addr_max` and the end of low RAM
/// that stays above `kernel.kernel_end`.
pub fn load<M, F>(
    mem: &M,
    layout: &MemoryLayout,
    initramfs: &mut F,
    path: &Path,
    kernel: &LoadedKernel,
) -> Result<Placement, Error>
where
    M: GuestMemoryBackend,
    F: ReadVolatile + Seek,
{
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let size = initramfs.seek(SeekFrom::End(0)).map_err(io)?;
    if size == 0 {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    let mut limit = layout.low_ram_end().0;
    if let Some(max) = kernel.initrd_addr_max() {
        limit = limit.min(max.saturating_add(1));
    }
    let lowest = kernel.kernel_end.0.max(HIMEM_START).next_multiple_of(PAGE);
    let free = limit.saturating_sub(lowest);
    let addr = limit
        .checked_sub(size)
        .map(|a| a & !(PAGE - 1))
        .filter(|&a| a >= lowest);
    let (Some(addr), Ok(len)) = (addr, usize::try_from(size)) else {
        return Err(Error::TooLarge {
            path: path.to_owned(),
            size,
            limit,
            free,
        });
    };
    initramfs.rewind().map_err(io)?;
    mem.read_exact_volatile_from(GuestAddress(addr), initramfs, len)
        .map_err(|source| Error::Memory {
            path: path.to_owned(),
            addr,
            source,
        })?;
    Ok(Placement {
        addr: GuestAddress(addr),
        len,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::BootMode;
    use std::io::Cursor;
    use vm_memory::GuestMemoryMmap;

    const MIB: u64 = 1 << 20;

    fn kernel(end: u64, initrd_addr_max: Option<u32>) -> LoadedKernel {
        let setup_header =
            initrd_addr_max.map(|max| linux_loader::loader::bootparam::setup_header {
                initrd_addr_max: max,
                ..Default::default()
            });
        LoadedKernel {
            entry: GuestAddress(HIMEM_START + 0x200),
            mode: BootMode::Linux64,
            setup_header,
            kernel_end: GuestAddress(end),
        }
    }

    fn guest(ram: u64) -> (MemoryLayout, GuestMemoryMmap) {
        let l = MemoryLayout::plan(ram, 40).unwrap();
        let m = GuestMemoryMmap::from_ranges(&l.ram_regions()).unwrap();
        (l, m)
    }

    #[test]
    fn placed_at_top_of_low_ram() {
        let (l, m) = guest(128 * MIB);
        let data: Vec<u8> = (0..5000u32).map(|i| (i % 241) as u8).collect();
        let p = load(
            &m,
            &l,
            &mut Cursor::new(data.clone()),
            Path::new("i"),
            &kernel(32 * MIB, None),
        )
        .unwrap();
        assert_eq!(p.len, 5000);
        assert_eq!(p.addr.0 % PAGE, 0);
        assert_eq!(p.addr.0, 128 * MIB - 2 * PAGE);
        let mut back = vec![0u8; 5000];
        m.read_slice(&mut back, p.addr).unwrap();
        assert_eq!(back, data);
    }

    #[test]
    fn respects_initrd_addr_max() {
        let (l, m) = guest(4096 * MIB);
        let p = load(
            &m,
            &l,
            &mut Cursor::new(vec![1u8; 3 * PAGE as usize]),
            Path::new("i"),
            &kernel(32 * MIB, Some(0x7fff_ffff)),
        )
        .unwrap();
        assert_eq!(p.addr.0, 0x8000_0000 - 3 * PAGE);
    }

    #[test]
    fn too_large_error_names_file_and_sizes() {
        let (l, m) = guest(64 * MIB);
        let big = vec![0u8; (40 * MIB) as usize];
        let err = load(
            &m,
            &l,
            &mut Cursor::new(big),
            Path::new("/img/initrd.gz"),
            &kernel(30 * MIB, None),
        )
        .unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.starts_with(
                "initramfs /img/initrd.gz (40 MiB) does not fit in guest memory below 0x4000000"
            ),
            "{msg}"
        );
        assert!(
            msg.contains("34 MiB free") && msg.contains("--memory"),
            "{msg}"
        );
        // Exactly the free space fits.
        let fit = vec![0u8; (34 * MIB) as usize];
        let p = load(
            &m,
            &l,
            &mut Cursor::new(fit),
            Path::new("i"),
            &kernel(30 * MIB, None),
        )
        .unwrap();
        assert_eq!(p.addr.0, 30 * MIB);
    }

    #[test]
    fn empty_is_refused() {
        let (l, m) = guest(64 * MIB);
        let err = load(
            &m,
            &l,
            &mut Cursor::new(Vec::new()),
            Path::new("/e"),
            &kernel(2 * MIB, None),
        )
        .unwrap_err();
        assert_eq!(err.to_string(), "initramfs /e is empty");
    }
}
