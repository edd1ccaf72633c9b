//! The kernel command line, written NUL-terminated at `CMDLINE_START`.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::kernel::LoadedKernel;
use crate::layout::{CMDLINE_MAX_SIZE, CMDLINE_START};
use crate::Placement;

/// Errors of writing the command line.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Longer than the kernel (or the space reserved for it) accepts.
    #[error(
        "kernel command line is {len} bytes long but the kernel accepts at most {max} bytes \
         ({limit_source})"
    )]
    TooLong {
        /// Length of the command line.
        len: usize,
        /// Longest accepted.
        max: usize,
        /// Where the limit comes from.
        limit_source: &'static str,
    },
    /// Contains a NUL byte, which would cut it short.
    #[error("kernel command line contains a NUL byte at offset {offset}")]
    InteriorNul {
        /// Offset of the NUL.
        offset: usize,
    },
    /// Guest memory write failed.
    #[error("cannot write the kernel command line at {addr:#x}: {source}")]
    Memory {
        /// Where.
        addr: u64,
        /// Underlying error.
        source: vm_memory::GuestMemoryError,
    },
}

/// Writes `cmdline` (plus a NUL) at `CMDLINE_START` after checking it against the kernel's
/// limit: the setup header's `cmdline_size`, else `kernel::DEFAULT_CMDLINE_LIMIT`. The
/// returned length excludes the NUL.
pub fn write<M: GuestMemoryBackend>(
    mem: &M,
    cmdline: &str,
    kernel: &LoadedKernel,
) -> Result<Placement, Error> {
    let bytes = cmdline.as_bytes();
    if let Some(offset) = bytes.iter().position(|&b| b == 0) {
        return Err(Error::InteriorNul { offset });
    }
    let reserved = CMDLINE_MAX_SIZE as usize - 1;
    let (max, limit_source) = if kernel.cmdline_limit() <= reserved {
        (
            kernel.cmdline_limit(),
            if kernel.setup_header.is_some() {
                "cmdline_size of its setup header"
            } else {
                "the x86 COMMAND_LINE_SIZE default"
            },
        )
    } else {
        (reserved, "space reserved for it in guest memory")
    };
    if bytes.len() > max {
        return Err(Error::TooLong {
            len: bytes.len(),
            max,
            limit_source,
        });
    }
    let mut with_nul = Vec::with_capacity(bytes.len() + 1);
    with_nul.extend_from_slice(bytes);
    with_nul.push(0);
    let addr = GuestAddress(CMDLINE_START);
    mem.write_slice(&with_nul, addr)
        .map_err(|source| Error::Memory {
            addr: CMDLINE_START,
            source,
        })?;
    Ok(Placement {
        addr,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernel::{self, testimg, BootMode};
    use std::io::Cursor;
    use std::path::Path;
    use vm_memory::GuestMemoryMmap;

    fn setup() -> (GuestMemoryMmap, LoadedKernel) {
        let m = GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 64 << 20)]).unwrap();
        let k = kernel::load(
            &m,
            &mut Cursor::new(testimg::bzimage(0x1000)),
            Path::new("k"),
        )
        .unwrap();
        (m, k)
    }

    #[test]
    fn written_nul_terminated() {
        let (m, k) = setup();
        let p = write(&m, "console=ttyS0 panic=-1", &k).unwrap();
        assert_eq!(p.addr, GuestAddress(CMDLINE_START));
        assert_eq!(p.len, 22);
        let mut buf = [0xffu8; 23];
        m.read_slice(&mut buf, p.addr).unwrap();
        assert_eq!(&buf, b"console=ttyS0 panic=-1\0");
    }

    #[test]
    fn too_long_names_the_sizes() {
        let (m, k) = setup();
        // The synthetic bzImage says cmdline_size = 2047.
        assert!(write(&m, &"a".repeat(2047), &k).is_ok());
        let err = write(&m, &"a".repeat(2048), &k).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("2048 bytes") && msg.contains("at most 2047"),
            "{msg}"
        );
        // An ELF kernel has the 2048 default.
        let elf = LoadedKernel {
            entry: GuestAddress(0x100_0000),
            mode: BootMode::Pvh,
            setup_header: None,
            kernel_end: GuestAddress(0x200_0000),
        };
        assert!(write(&m, &"b".repeat(2048), &elf).is_ok());
        assert!(matches!(
            write(&m, &"b".repeat(2049), &elf),
            Err(Error::TooLong { max: 2048, .. })
        ));
    }

    #[test]
    fn nul_is_refused() {
        let (m, k) = setup();
        assert!(matches!(
            write(&m, "a\0b", &k),
            Err(Error::InteriorNul { offset: 1 })
        ));
    }
}
