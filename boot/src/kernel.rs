//! Kernel image loading: bzImage (64-bit boot protocol) and ELF vmlinux (64-bit entry or PVH).

use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};

use linux_loader::loader::bootparam::{setup_header, LOADED_HIGH, XLF_KERNEL_64};
use linux_loader::loader::elf::PvhBootCapability;
use linux_loader::loader::{BzImage, Elf, KernelLoader};
use vm_memory::{ByteValued, GuestAddress, GuestMemoryBackend, ReadVolatile};

use crate::layout::HIMEM_START;

/// Command-line limit of kernels that do not state one (x86 `COMMAND_LINE_SIZE`).
pub const DEFAULT_CMDLINE_LIMIT: usize = 2048;

/// Offset of the setup header in a bzImage.
const SETUP_HEADER_OFFSET: usize = 0x1f1;
/// Offset of the "HdrS" magic in a bzImage.
const HDRS_OFFSET: usize = 0x202;
const HDRS_MAGIC: &[u8; 4] = b"HdrS";
/// Oldest boot protocol with a 64-bit entry point (2.12, `XLF_KERNEL_64`).
const MIN_BOOT_PROTOCOL: u16 = 0x020c;
/// The 64-bit entry of a bzImage is this far into the protected-mode code.
const BZIMAGE_64BIT_ENTRY_OFFSET: u64 = 0x200;

const ELF_MAGIC: &[u8; 4] = b"\x7fELF";
const ELF_HEADER_SIZE: usize = 64;
const ELF_PHDR_SIZE: usize = 56;
const ELFCLASS32: u8 = 1;
const ELFCLASS64: u8 = 2;
const ELFDATA2LSB: u8 = 1;
const EM_X86_64: u16 = 62;
const PT_LOAD: u32 = 1;

/// Errors of loading a kernel image; each names the file.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The file could not be read.
    #[error("kernel {}: cannot read: {source}", path.display())]
    Io {
        /// Kernel file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The file is empty.
    #[error("kernel {} is empty", path.display())]
    Empty {
        /// Kernel file.
        path: PathBuf,
    },
    /// Neither a bzImage nor an ELF file.
    #[error("kernel {}: not a bzImage or ELF vmlinux", path.display())]
    UnknownFormat {
        /// Kernel file.
        path: PathBuf,
    },
    /// The file ends before something its headers describe.
    #[error("kernel {}: truncated: {what} needs {needed} bytes but the file has {len}", path.display())]
    Truncated {
        /// Kernel file.
        path: PathBuf,
        /// What is cut off.
        what: &'static str,
        /// Bytes the file should have.
        needed: u64,
        /// Bytes it has.
        len: u64,
    },
    /// A valid image this VMM cannot boot.
    #[error("kernel {}: unsupported: {reason}", path.display())]
    Unsupported {
        /// Kernel file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// Inconsistent headers.
    #[error("kernel {}: corrupt: {reason}", path.display())]
    Corrupt {
        /// Kernel file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The kernel needs memory the guest does not have.
    #[error(
        "kernel {} needs guest memory [{start:#x}, {end:#x}) ({} MiB) which the guest does not \
         have: give the guest more memory (--memory)", path.display(), end.div_ceil(1 << 20)
    )]
    DoesNotFit {
        /// Kernel file.
        path: PathBuf,
        /// First address needed.
        start: u64,
        /// First address past what is needed.
        end: u64,
    },
}

/// How the boot vCPU enters the kernel.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BootMode {
    /// Linux 64-bit boot protocol: long mode, paging on, `rsi` = `boot_params`.
    Linux64,
    /// PVH: 32-bit protected mode, paging off, `ebx` = `hvm_start_info`.
    Pvh,
}

/// A kernel loaded into guest memory.
#[derive(Clone, Copy, Debug)]
pub struct LoadedKernel {
    /// Where the boot vCPU starts.
    pub entry: GuestAddress,
    /// Entry protocol.
    pub mode: BootMode,
    /// The bzImage setup header (with `code32_start` = load address); `None` for ELF.
    pub setup_header: Option<setup_header>,
    /// First address past the memory the kernel occupies while it boots (for a bzImage this
    /// includes the decompression buffer `pref_address + init_size`).
    pub kernel_end: GuestAddress,
}

impl LoadedKernel {
    /// Longest command line (without the NUL) the kernel accepts.
    pub fn cmdline_limit(&self) -> usize {
        match self.setup_header {
            Some(h) if h.cmdline_size > 0 => h.cmdline_size as usize,
            _ => DEFAULT_CMDLINE_LIMIT,
        }
    }

    /// Highest address the initramfs may occupy (inclusive), if the kernel states one.
    pub fn initrd_addr_max(&self) -> Option<u64> {
        self.setup_header
            .map(|h| u64::from(h.initrd_addr_max))
            .filter(|&max| max != 0)
    }
}

/// Loads the kernel image read from `kernel` (named `path` in errors) into `mem`.
///
/// A bzImage is loaded at `HIMEM_START` and entered at its 64-bit entry (load + 0x200); it
/// must speak boot protocol 2.12+ with `XLF_KERNEL_64`. An ELF vmlinux is loaded at its
/// segments' physical addresses and entered through its PVH note when it has one
/// (`BootMode::Pvh`), else at `e_entry` with the 64-bit protocol.
pub fn load<M, F>(mem: &M, kernel: &mut F, path: &Path) -> Result<LoadedKernel, Error>
where
    M: GuestMemoryBackend,
    F: Read + ReadVolatile + Seek,
{
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };
    let len = kernel.seek(SeekFrom::End(0)).map_err(io)?;
    if len == 0 {
        return Err(Error::Empty {
            path: path.to_owned(),
        });
    }
    let mut head = vec![0u8; len.min(0x1000) as usize];
    kernel.rewind().map_err(io)?;
    kernel.read_exact(&mut head).map_err(io)?;

    if head.starts_with(ELF_MAGIC) {
        load_elf(mem, kernel, path, &head, len)
    } else if head.get(HDRS_OFFSET..HDRS_OFFSET + 4) == Some(HDRS_MAGIC) {
        load_bzimage(mem, kernel, path, &head, len)
    } else {
        Err(Error::UnknownFormat {
            path: path.to_owned(),
        })
    }
}

fn align_up(value: u64, align: u64) -> Option<u64> {
    if align <= 1 {
        return Some(value);
    }
    value.checked_add(align - 1).map(|v| v / align * align)
}

/// Checks that `[start, end)` is guest RAM.
fn check_fits<M: GuestMemoryBackend>(
    mem: &M,
    path: &Path,
    start: u64,
    end: u64,
) -> Result<(), Error> {
    let fits = end > start
        && usize::try_from(end - start)
            .is_ok_and(|len| GuestMemoryBackend::check_range(mem, GuestAddress(start), len));
    if fits {
        Ok(())
    } else {
        Err(Error::DoesNotFit {
            path: path.to_owned(),
            start,
            end,
        })
    }
}

fn load_bzimage<M, F>(
    mem: &M,
    kernel: &mut F,
    path: &Path,
    head: &[u8],
    len: u64,
) -> Result<LoadedKernel, Error>
where
    M: GuestMemoryBackend,
    F: Read + ReadVolatile + Seek,
{
    let unsupported = |reason: String| Error::Unsupported {
        path: path.to_owned(),
        reason,
    };
    let header_end = SETUP_HEADER_OFFSET + std::mem::size_of::<setup_header>();
    let Some(raw) = head.get(SETUP_HEADER_OFFSET..header_end) else {
        return Err(Error::Truncated {
            path: path.to_owned(),
            what: "the bzImage setup header",
            needed: header_end as u64,
            len,
        });
    };
    let mut hdr = setup_header::default();
    hdr.as_mut_slice().copy_from_slice(raw);

    let version = hdr.version;
    if version < MIN_BOOT_PROTOCOL {
        return Err(unsupported(format!(
            "bzImage boot protocol {}.{:02} is older than 2.12 and has no 64-bit entry point",
            version >> 8,
            version & 0xff
        )));
    }
    if hdr.xloadflags & XLF_KERNEL_64 == 0 {
        return Err(unsupported(
            "bzImage has no 64-bit entry point (XLF_KERNEL_64 is not set)".into(),
        ));
    }
    if hdr.loadflags & LOADED_HIGH == 0 {
        return Err(unsupported(
            "zImage (not loaded high) kernels are not supported".into(),
        ));
    }

    let setup_sects = match hdr.setup_sects {
        0 => 4,
        n => u64::from(n),
    };
    let setup_size = (setup_sects + 1) * 512;
    let needed = setup_size + u64::from(hdr.syssize) * 16;
    if len < needed {
        return Err(Error::Truncated {
            path: path.to_owned(),
            what: "the bzImage setup code and protected-mode kernel",
            needed,
            len,
        });
    }

    let load = HIMEM_START;
    let loaded_end = load + (len - setup_size);
    // The 64-bit decompressor runs at max(load aligned up, pref_address) and needs init_size
    // bytes there (arch/x86/boot/compressed/head_64.S).
    let pref = hdr.pref_address;
    let output = if hdr.relocatable_kernel != 0 {
        align_up(load, u64::from(hdr.kernel_alignment)).map(|a| a.max(pref))
    } else {
        Some(pref)
    };
    let end = output
        .and_then(|o| o.checked_add(u64::from(hdr.init_size)))
        .map(|e| e.max(loaded_end))
        .ok_or_else(|| Error::Corrupt {
            path: path.to_owned(),
            reason: format!("pref_address {pref:#x} + init_size {:#x} overflows", {
                hdr.init_size
            }),
        })?;
    check_fits(mem, path, load, end)?;

    kernel.rewind().map_err(|source| Error::Io {
        path: path.to_owned(),
        source,
    })?;
    let result = BzImage::load(
        mem,
        Some(GuestAddress(load)),
        kernel,
        Some(GuestAddress(HIMEM_START)),
    )
    .map_err(|e| Error::Corrupt {
        path: path.to_owned(),
        reason: e.to_string(),
    })?;

    Ok(LoadedKernel {
        entry: GuestAddress(result.kernel_load.0 + BZIMAGE_64BIT_ENTRY_OFFSET),
        mode: BootMode::Linux64,
        setup_header: result.setup_header.or(Some(hdr)),
        kernel_end: GuestAddress(end),
    })
}

fn le_u16(b: &[u8], at: usize) -> u16 {
    u16::from_le_bytes([b[at], b[at + 1]])
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

fn load_elf<M, F>(
    mem: &M,
    kernel: &mut F,
    path: &Path,
    head: &[u8],
    len: u64,
) -> Result<LoadedKernel, Error>
where
    M: GuestMemoryBackend,
    F: Read + ReadVolatile + Seek,
{
    let truncated = |what, needed| Error::Truncated {
        path: path.to_owned(),
        what,
        needed,
        len,
    };
    let unsupported = |reason: String| Error::Unsupported {
        path: path.to_owned(),
        reason,
    };
    let corrupt = |reason: String| Error::Corrupt {
        path: path.to_owned(),
        reason,
    };
    let io = |source| Error::Io {
        path: path.to_owned(),
        source,
    };

    if head.len() < ELF_HEADER_SIZE {
        return Err(truncated("the ELF header", ELF_HEADER_SIZE as u64));
    }
    match head[4] {
        ELFCLASS64 => {}
        ELFCLASS32 => return Err(unsupported("32-bit ELF kernels are not supported".into())),
        class => return Err(corrupt(format!("unknown ELF class {class}"))),
    }
    if head[5] != ELFDATA2LSB {
        return Err(unsupported("big-endian ELF".into()));
    }
    let machine = le_u16(head, 18);
    if machine != EM_X86_64 {
        return Err(unsupported(format!(
            "ELF machine {machine} is not x86-64 ({EM_X86_64})"
        )));
    }
    let e_entry = le_u64(head, 24);
    let phoff = le_u64(head, 32);
    let phentsize = le_u16(head, 54);
    let phnum = le_u16(head, 56);
    if usize::from(phentsize) != ELF_PHDR_SIZE {
        return Err(corrupt(format!(
            "program header size {phentsize}, expected {ELF_PHDR_SIZE}"
        )));
    }
    let phdrs_end = phoff
        .checked_add(u64::from(phnum) * ELF_PHDR_SIZE as u64)
        .ok_or_else(|| corrupt(format!("program header offset {phoff:#x} overflows")))?;
    if phdrs_end > len {
        return Err(truncated("the ELF program headers", phdrs_end));
    }
    let mut phdrs = vec![0u8; usize::from(phnum) * ELF_PHDR_SIZE];
    kernel.seek(SeekFrom::Start(phoff)).map_err(io)?;
    kernel.read_exact(&mut phdrs).map_err(io)?;

    let mut kernel_end = None;
    let mut loaded = Vec::new();
    for ph in phdrs.chunks_exact(ELF_PHDR_SIZE) {
        let (p_type, offset, paddr, filesz, memsz) = (
            le_u32(ph, 0),
            le_u64(ph, 8),
            le_u64(ph, 24),
            le_u64(ph, 32),
            le_u64(ph, 40),
        );
        if p_type != PT_LOAD || memsz == 0 {
            continue;
        }
        if filesz > memsz {
            return Err(corrupt(format!(
                "segment at {paddr:#x} has file size {filesz:#x} > memory size {memsz:#x}"
            )));
        }
        let file_end = offset
            .checked_add(filesz)
            .ok_or_else(|| corrupt(format!("segment offset {offset:#x} overflows")))?;
        if file_end > len {
            return Err(truncated("an ELF segment", file_end));
        }
        if paddr < HIMEM_START {
            return Err(unsupported(format!(
                "segment at {paddr:#x} is below {HIMEM_START:#x}, over the boot structures"
            )));
        }
        let end = paddr
            .checked_add(memsz)
            .ok_or_else(|| corrupt(format!("segment at {paddr:#x} overflows")))?;
        check_fits(mem, path, paddr, end)?;
        kernel_end = kernel_end.max(Some(end));
        loaded.push(paddr..end);
    }
    let kernel_end = kernel_end.ok_or_else(|| corrupt("no loadable segment".into()))?;

    kernel.rewind().map_err(io)?;
    let result = Elf::load(mem, None, kernel, Some(GuestAddress(HIMEM_START)))
        .map_err(|e| corrupt(e.to_string()))?;
    let (entry, mode) = match result.pvh_boot_cap {
        PvhBootCapability::PvhEntryPresent(addr) => (addr, BootMode::Pvh),
        _ => (GuestAddress(e_entry), BootMode::Linux64),
    };
    // The vCPU would start in memory the file did not fill.
    if !loaded.iter().any(|r| r.contains(&entry.0)) {
        let which = match mode {
            BootMode::Pvh => "PVH entry point",
            BootMode::Linux64 => "entry point (e_entry)",
        };
        return Err(corrupt(format!(
            "{which} {:#x} is outside the loaded segments",
            entry.0
        )));
    }
    Ok(LoadedKernel {
        entry,
        mode,
        setup_header: None,
        kernel_end: GuestAddress(kernel_end),
    })
}

/// Synthetic kernel images for tests (also used by other modules' tests).
#[cfg(test)]
pub(crate) mod testimg {
    /// A minimal bzImage: `setup_sects` sectors of setup, then `payload` bytes of "kernel".
    pub fn bzimage(payload: usize) -> Vec<u8> {
        let setup_sects = 4u8;
        let setup = (usize::from(setup_sects) + 1) * 512;
        let mut f = vec![0u8; setup + payload];
        let put = |f: &mut Vec<u8>, at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
        f[0x1f1] = setup_sects;
        put(&mut f, 0x1f4, &(payload.div_ceil(16) as u32).to_le_bytes()); // syssize
        put(&mut f, 0x1fe, &0xaa55u16.to_le_bytes());
        put(&mut f, 0x202, b"HdrS");
        put(&mut f, 0x206, &0x020fu16.to_le_bytes()); // version 2.15
        f[0x211] = 0x01; // loadflags: LOADED_HIGH
        put(&mut f, 0x214, &0x100000u32.to_le_bytes()); // code32_start
        put(&mut f, 0x22c, &0x7fff_ffffu32.to_le_bytes()); // initrd_addr_max
        put(&mut f, 0x230, &0x20_0000u32.to_le_bytes()); // kernel_alignment
        f[0x234] = 1; // relocatable_kernel
        put(&mut f, 0x236, &0x0003u16.to_le_bytes()); // xloadflags: KERNEL_64 | ABOVE_4G
        put(&mut f, 0x238, &2047u32.to_le_bytes()); // cmdline_size
        put(&mut f, 0x258, &0x100_0000u64.to_le_bytes()); // pref_address
        put(&mut f, 0x260, &0x80_0000u32.to_le_bytes()); // init_size (8 MiB)
        for (i, b) in f[setup..].iter_mut().enumerate() {
            *b = (i % 251) as u8;
        }
        f
    }

    /// A minimal ELF64 vmlinux: one PT_LOAD of `payload` bytes at `paddr` (memsz twice
    /// that), entry at `paddr`, and a PT_NOTE holding a Xen PVH entry note when `pvh` is set.
    pub fn elf(paddr: u64, payload: usize, pvh: Option<u32>) -> Vec<u8> {
        let phnum: u16 = if pvh.is_some() { 2 } else { 1 };
        let data_off = 0x1000usize;
        let mut f = vec![0u8; data_off + payload];
        let put = |f: &mut Vec<u8>, at: usize, v: &[u8]| f[at..at + v.len()].copy_from_slice(v);
        put(&mut f, 0, b"\x7fELF");
        f[4] = 2; // ELFCLASS64
        f[5] = 1; // little endian
        f[6] = 1; // EV_CURRENT
        put(&mut f, 16, &2u16.to_le_bytes()); // ET_EXEC
        put(&mut f, 18, &62u16.to_le_bytes()); // EM_X86_64
        put(&mut f, 20, &1u32.to_le_bytes());
        put(&mut f, 24, &paddr.to_le_bytes()); // e_entry
        put(&mut f, 32, &64u64.to_le_bytes()); // e_phoff
        put(&mut f, 52, &64u16.to_le_bytes()); // e_ehsize
        put(&mut f, 54, &56u16.to_le_bytes()); // e_phentsize
        put(&mut f, 56, &phnum.to_le_bytes());
        // PT_LOAD
        let ph = 64;
        put(&mut f, ph, &1u32.to_le_bytes());
        put(&mut f, ph + 4, &7u32.to_le_bytes());
        put(&mut f, ph + 8, &(data_off as u64).to_le_bytes());
        put(
            &mut f,
            ph + 16,
            &(0xffff_ffff_8000_0000 + paddr).to_le_bytes(),
        );
        put(&mut f, ph + 24, &paddr.to_le_bytes());
        put(&mut f, ph + 32, &(payload as u64).to_le_bytes());
        put(&mut f, ph + 40, &(2 * payload as u64).to_le_bytes());
        put(&mut f, ph + 48, &0x1000u64.to_le_bytes());
        if let Some(entry) = pvh {
            // A foreign note first, then the Xen PHYS32_ENTRY note (type 18).
            let note_off = 0x200usize;
            let mut note = Vec::new();
            for (name, ty, desc) in [
                (&b"GNU\0"[..], 3u32, &[1u8, 2, 3, 4, 5, 6, 7, 8][..]),
                (&b"Xen\0"[..], 18u32, &entry.to_le_bytes()[..]),
            ] {
                note.extend_from_slice(&(name.len() as u32).to_le_bytes());
                note.extend_from_slice(&(desc.len() as u32).to_le_bytes());
                note.extend_from_slice(&ty.to_le_bytes());
                note.extend_from_slice(name);
                note.extend_from_slice(desc);
            }
            put(&mut f, note_off, &note);
            let ph = 64 + 56;
            put(&mut f, ph, &4u32.to_le_bytes()); // PT_NOTE
            put(&mut f, ph + 8, &(note_off as u64).to_le_bytes());
            put(&mut f, ph + 32, &(note.len() as u64).to_le_bytes());
            put(&mut f, ph + 40, &(note.len() as u64).to_le_bytes());
            put(&mut f, ph + 48, &4u64.to_le_bytes());
        }
        for (i, b) in f[data_off..].iter_mut().enumerate() {
            *b = (i % 253) as u8;
        }
        f
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;
    use vm_memory::{Bytes, GuestMemoryMmap};

    const MIB: usize = 1 << 20;

    fn mem(size: usize) -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), size)]).unwrap()
    }

    fn load_bytes(m: &GuestMemoryMmap, bytes: Vec<u8>) -> Result<LoadedKernel, Error> {
        load(m, &mut Cursor::new(bytes), Path::new("/x/vmlinuz"))
    }

    #[test]
    fn bzimage_loads_at_1mib_with_64bit_entry() {
        let m = mem(64 * MIB);
        let img = testimg::bzimage(0x3000);
        let k = load_bytes(&m, img.clone()).unwrap();
        assert_eq!(k.mode, BootMode::Linux64);
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        let hdr = k.setup_header.unwrap();
        assert_eq!({ hdr.version }, 0x020f);
        assert_eq!({ hdr.code32_start }, HIMEM_START as u32);
        assert_eq!(k.cmdline_limit(), 2047);
        assert_eq!(k.initrd_addr_max(), Some(0x7fff_ffff));
        // Decompression buffer: pref_address (16 MiB) + init_size (8 MiB).
        assert_eq!(k.kernel_end, GuestAddress(24 << 20));
        // The protected-mode part is in memory at 1 MiB.
        let mut buf = vec![0u8; 0x3000];
        m.read_slice(&mut buf, GuestAddress(HIMEM_START)).unwrap();
        assert_eq!(buf, img[5 * 512..]);
    }

    #[test]
    fn bzimage_too_big_for_memory() {
        let m = mem(20 * MIB);
        let err = load_bytes(&m, testimg::bzimage(0x3000)).unwrap_err();
        assert!(
            matches!(err, Error::DoesNotFit { end, .. } if end == 24 << 20),
            "{err}"
        );
        assert!(err.to_string().contains("/x/vmlinuz"), "{err}");
        assert!(err.to_string().contains("--memory"), "{err}");
    }

    #[test]
    fn bzimage_truncated() {
        let m = mem(64 * MIB);
        let mut img = testimg::bzimage(0x3000);
        img.truncate(img.len() - 0x100);
        let err = load_bytes(&m, img).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        // Cut inside the setup header.
        let mut img = testimg::bzimage(0x3000);
        img.truncate(0x210);
        let err = load_bytes(&m, img).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { needed, .. } if needed == 0x26c),
            "{err}"
        );
    }

    #[test]
    fn bzimage_without_64bit_entry_is_refused() {
        let m = mem(64 * MIB);
        let mut img = testimg::bzimage(0x1000);
        img[0x236] = 0; // xloadflags
        let err = load_bytes(&m, img).unwrap_err();
        assert!(err.to_string().contains("XLF_KERNEL_64"), "{err}");
        let mut img = testimg::bzimage(0x1000);
        img[0x206..0x208].copy_from_slice(&0x020au16.to_le_bytes());
        let err = load_bytes(&m, img).unwrap_err();
        assert!(err.to_string().contains("2.10 is older"), "{err}");
    }

    #[test]
    fn elf_with_pvh_note() {
        let m = mem(64 * MIB);
        let img = testimg::elf(0x100_0000, 0x2000, Some(0x100_0400));
        let k = load_bytes(&m, img.clone()).unwrap();
        assert_eq!(k.mode, BootMode::Pvh);
        assert_eq!(k.entry, GuestAddress(0x100_0400));
        assert!(k.setup_header.is_none());
        assert_eq!(k.kernel_end, GuestAddress(0x100_0000 + 0x4000));
        assert_eq!(k.cmdline_limit(), DEFAULT_CMDLINE_LIMIT);
        let mut buf = vec![0u8; 0x2000];
        m.read_slice(&mut buf, GuestAddress(0x100_0000)).unwrap();
        assert_eq!(buf, img[0x1000..]);
    }

    #[test]
    fn elf_without_note_uses_e_entry() {
        let m = mem(64 * MIB);
        let k = load_bytes(&m, testimg::elf(0x100_0000, 0x2000, None)).unwrap();
        assert_eq!(k.mode, BootMode::Linux64);
        assert_eq!(k.entry, GuestAddress(0x100_0000));
    }

    #[test]
    fn elf_errors() {
        let m = mem(64 * MIB);
        // Segment beyond RAM.
        let err = load_bytes(&m, testimg::elf(0x400_0000, 0x2000, None)).unwrap_err();
        assert!(matches!(err, Error::DoesNotFit { .. }), "{err}");
        // Truncated segment data.
        let mut img = testimg::elf(0x100_0000, 0x2000, None);
        img.truncate(0x1800);
        let err = load_bytes(&m, img).unwrap_err();
        assert!(
            matches!(err, Error::Truncated { needed: 0x3000, .. }),
            "{err}"
        );
        // Truncated header.
        let err = load_bytes(&m, b"\x7fELF\x02\x01".to_vec()).unwrap_err();
        assert!(matches!(err, Error::Truncated { .. }), "{err}");
        // 32-bit ELF.
        let mut img = testimg::elf(0x100_0000, 0x2000, None);
        img[4] = 1;
        let err = load_bytes(&m, img).unwrap_err();
        assert!(err.to_string().contains("32-bit"), "{err}");
        // Segment over the boot structures.
        let err = load_bytes(&m, testimg::elf(0x8000, 0x100, None)).unwrap_err();
        assert!(matches!(err, Error::Unsupported { .. }), "{err}");
        // Bad PVH note (descriptor too short) is reported as corrupt.
        let mut img = testimg::elf(0x100_0000, 0x2000, Some(0x100_0000));
        let xen_note = 0x200 + 12 + 4 + 8;
        img[xen_note + 4..xen_note + 8].copy_from_slice(&2u32.to_le_bytes());
        let err = load_bytes(&m, img).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
    }

    /// Found by fuzz target kernel_loader: an ELF whose entry point lies outside every
    /// loaded segment (here past guest RAM) was accepted, and the vCPU would have started
    /// in memory the kernel never filled.
    #[test]
    fn elf_entry_outside_the_loaded_segments_is_corrupt() {
        let m = mem(64 * MIB);
        let mut img = testimg::elf(0x100_0000, 0x2000, None);
        img[24..32].copy_from_slice(&0x10_0000_0100_0000u64.to_le_bytes());
        let err = load_bytes(&m, img).unwrap_err();
        assert!(matches!(err, Error::Corrupt { .. }), "{err}");
        assert_eq!(
            err.to_string(),
            "kernel /x/vmlinuz: corrupt: entry point (e_entry) 0x10000001000000 is outside \
             the loaded segments"
        );
        // Just past the segment (memsz 0x4000) is outside too; its last byte is inside.
        let mut img = testimg::elf(0x100_0000, 0x2000, None);
        img[24..32].copy_from_slice(&0x100_4000u64.to_le_bytes());
        assert!(load_bytes(&m, img).is_err());
        let mut img = testimg::elf(0x100_0000, 0x2000, None);
        img[24..32].copy_from_slice(&0x100_3fffu64.to_le_bytes());
        assert_eq!(load_bytes(&m, img).unwrap().entry, GuestAddress(0x100_3fff));
        // A PVH entry below the segment.
        let err = load_bytes(&m, testimg::elf(0x100_0000, 0x2000, Some(0x20_0000))).unwrap_err();
        assert!(
            err.to_string().contains("PVH entry point 0x200000"),
            "{err}"
        );
    }

    #[test]
    fn empty_and_unknown_files() {
        let m = mem(64 * MIB);
        let err = load_bytes(&m, Vec::new()).unwrap_err();
        assert_eq!(err.to_string(), "kernel /x/vmlinuz is empty");
        let err = load_bytes(&m, vec![0x42; 4096]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "kernel /x/vmlinuz: not a bzImage or ELF vmlinux"
        );
        let err = load_bytes(&m, b"#!/bin/sh\n".to_vec()).unwrap_err();
        assert!(matches!(err, Error::UnknownFormat { .. }));
    }

    /// Loads the machine's Debian kernel when one is present.
    #[test]
    fn real_kernel_if_present() {
        let rig = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rig/kernel/boot");
        let candidates = [Path::new("/boot"), rig.as_path()]
            .into_iter()
            .filter_map(|d| std::fs::read_dir(d).ok())
            .flatten()
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with("vmlinuz-"))
            })
            .collect::<Vec<_>>();
        let Some(path) = candidates.first() else {
            println!(
                "SKIP real_kernel_if_present: no /boot/vmlinuz-* or {}/vmlinuz-* on this machine",
                rig.display()
            );
            return;
        };
        let mut file = match std::fs::File::open(path) {
            Ok(f) => f,
            Err(e) => {
                println!("SKIP real_kernel_if_present: {}: {e}", path.display());
                return;
            }
        };
        let m = mem(512 * MIB);
        let k = load(&m, &mut file, path).unwrap();
        assert_eq!(k.mode, BootMode::Linux64);
        assert_eq!(k.entry, GuestAddress(HIMEM_START + 0x200));
        let hdr = k.setup_header.unwrap();
        assert!(hdr.version >= MIN_BOOT_PROTOCOL);
        assert!(k.kernel_end.0 > HIMEM_START);
        println!(
            "loaded {}: protocol {:#x}, cmdline_size {}, kernel_end {:#x}",
            path.display(),
            { hdr.version },
            { hdr.cmdline_size },
            k.kernel_end.0
        );
    }

    /// Loads the ELF vmlinux the rig extracts from the Debian bzImage, when present: a
    /// stock kernel built with CONFIG_PVH carries the PVH entry note.
    #[test]
    fn real_vmlinux_boots_through_pvh_if_present() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/rig/kernel/vmlinux");
        let Ok(mut file) = std::fs::File::open(&path) else {
            println!(
                "SKIP real_vmlinux_boots_through_pvh_if_present: no {} (tests/rig/run --setup makes it)",
                path.display()
            );
            return;
        };
        let m = mem(512 * MIB);
        let k = load(&m, &mut file, &path).unwrap();
        assert_eq!(k.mode, BootMode::Pvh, "the Debian kernel has a PVH note");
        assert!(
            k.entry.0 < 1 << 32,
            "PVH entry is a 32-bit physical address"
        );
        assert!(k.setup_header.is_none());
    }
}
