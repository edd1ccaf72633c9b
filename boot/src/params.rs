//! Boot information the kernel reads at entry: Linux `boot_params` (zero page) or the PVH
//! `hvm_start_info`.

use linux_loader::loader::bootparam::{
    boot_e820_entry, boot_params, setup_header, CAN_USE_HEAP, E820_MAX_ENTRIES_ZEROPAGE,
    LOADED_HIGH,
};
use linux_loader::loader::elf::start_info::XEN_HVM_START_MAGIC_VALUE;
use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::e820::E820Entry;
use crate::kernel::LoadedKernel;
use crate::layout::{PVH_INFO_START, ZERO_PAGE_START};
use crate::Placement;

/// `type_of_loader` for a boot loader without an assigned id.
const LOADER_TYPE_UNDEFINED: u8 = 0xff;
/// End of the real-mode heap, relative to the setup segment (boot.rst: 0xfe00 for a full
/// setup segment); only the 16-bit setup code uses it.
const HEAP_END_PTR: u16 = 0xfe00;
/// Boot sector signature and "HdrS" for a setup header synthesised for ELF kernels.
const BOOT_FLAG: u16 = 0xaa55;
const HDRS: u32 = 0x5372_6448;
/// Protocol version claimed by a synthesised setup header (2.15).
const SYNTHETIC_PROTOCOL: u16 = 0x020f;
/// Kernel alignment claimed by a synthesised setup header (x86-64 default, 16 MiB).
const SYNTHETIC_KERNEL_ALIGNMENT: u32 = 0x100_0000;

/// `hvm_start_info` version with a memory map.
const PVH_START_INFO_VERSION: u32 = 1;
const PVH_START_INFO_SIZE: u64 = 56;
const PVH_MODLIST_ENTRY_SIZE: u64 = 32;
const PVH_MEMMAP_ENTRY_SIZE: u64 = 24;

/// Errors of writing boot information.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// More e820 ranges than the structure can hold.
    #[error("{count} e820 entries do not fit in the {what} (at most {max})")]
    TooManyE820 {
        /// Entries given.
        count: usize,
        /// Entries that fit.
        max: usize,
        /// Which structure.
        what: &'static str,
    },
    /// Guest memory write failed.
    #[error("cannot write the {what} at {addr:#x}: {source}")]
    Memory {
        /// What was written.
        what: &'static str,
        /// Where.
        addr: u64,
        /// Underlying error.
        source: vm_memory::GuestMemoryError,
    },
}

fn synthetic_setup_header() -> setup_header {
    setup_header {
        boot_flag: BOOT_FLAG,
        header: HDRS,
        version: SYNTHETIC_PROTOCOL,
        loadflags: LOADED_HIGH,
        kernel_alignment: SYNTHETIC_KERNEL_ALIGNMENT,
        ..Default::default()
    }
}

/// Writes `boot_params` at `ZERO_PAGE_START` for the Linux 64-bit boot protocol and returns
/// its address (the boot vCPU's `rsi`). The kernel's own setup header is copied (or one is
/// synthesised for an ELF kernel), then the loader fields are filled: loader type 0xff,
/// `CAN_USE_HEAP`, command line, initramfs, e820 map and the RSDP address.
pub fn write_linux_boot_params<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &LoadedKernel,
    cmdline: Placement,
    initrd: Option<Placement>,
    e820: &[E820Entry],
    rsdp: GuestAddress,
) -> Result<GuestAddress, Error> {
    if e820.len() > E820_MAX_ENTRIES_ZEROPAGE {
        return Err(Error::TooManyE820 {
            count: e820.len(),
            max: E820_MAX_ENTRIES_ZEROPAGE,
            what: "zero page",
        });
    }
    let mut params = boot_params {
        hdr: kernel.setup_header.unwrap_or_else(synthetic_setup_header),
        ..Default::default()
    };
    params.hdr.type_of_loader = LOADER_TYPE_UNDEFINED;
    params.hdr.loadflags |= CAN_USE_HEAP;
    params.hdr.heap_end_ptr = HEAP_END_PTR;
    params.hdr.cmd_line_ptr = cmdline.addr.0 as u32;
    params.ext_cmd_line_ptr = (cmdline.addr.0 >> 32) as u32;
    if let Some(initrd) = initrd {
        params.hdr.ramdisk_image = initrd.addr.0 as u32;
        params.ext_ramdisk_image = (initrd.addr.0 >> 32) as u32;
        params.hdr.ramdisk_size = initrd.len as u32;
        params.ext_ramdisk_size = (initrd.len as u64 >> 32) as u32;
    }
    for (slot, entry) in params.e820_table.iter_mut().zip(e820) {
        *slot = boot_e820_entry {
            addr: entry.addr,
            size: entry.size,
            r#type: entry.kind as u32,
        };
    }
    params.e820_entries = e820.len() as u8;
    params.acpi_rsdp_addr = rsdp.0;

    let addr = GuestAddress(ZERO_PAGE_START);
    mem.write_obj(params, addr)
        .map_err(|source| Error::Memory {
            what: "zero page (boot_params)",
            addr: addr.0,
            source,
        })?;
    Ok(addr)
}

/// Writes the PVH `hvm_start_info` at `PVH_INFO_START`, followed by the module list (the
/// initramfs, if any) and the memory map, and returns its address (the boot vCPU's `ebx`).
pub fn write_pvh_start_info<M: GuestMemoryBackend>(
    mem: &M,
    cmdline: Placement,
    initrd: Option<Placement>,
    e820: &[E820Entry],
    rsdp: GuestAddress,
) -> Result<GuestAddress, Error> {
    let modlist = PVH_INFO_START + PVH_START_INFO_SIZE;
    let nr_modules = u64::from(initrd.is_some());
    let memmap = modlist + nr_modules * PVH_MODLIST_ENTRY_SIZE;
    let max = ((ZERO_PAGE_START - memmap) / PVH_MEMMAP_ENTRY_SIZE) as usize;
    if e820.len() > max {
        return Err(Error::TooManyE820 {
            count: e820.len(),
            max,
            what: "PVH memory map",
        });
    }

    let mut info = Vec::with_capacity(PVH_START_INFO_SIZE as usize);
    info.extend_from_slice(&XEN_HVM_START_MAGIC_VALUE.to_le_bytes());
    info.extend_from_slice(&PVH_START_INFO_VERSION.to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes()); // flags
    info.extend_from_slice(&(nr_modules as u32).to_le_bytes());
    info.extend_from_slice(&(if nr_modules > 0 { modlist } else { 0 }).to_le_bytes());
    info.extend_from_slice(&cmdline.addr.0.to_le_bytes());
    info.extend_from_slice(&rsdp.0.to_le_bytes());
    info.extend_from_slice(&memmap.to_le_bytes());
    info.extend_from_slice(&(e820.len() as u32).to_le_bytes());
    info.extend_from_slice(&0u32.to_le_bytes()); // reserved
    if let Some(initrd) = initrd {
        info.extend_from_slice(&initrd.addr.0.to_le_bytes());
        info.extend_from_slice(&(initrd.len as u64).to_le_bytes());
        info.extend_from_slice(&0u64.to_le_bytes()); // module cmdline
        info.extend_from_slice(&0u64.to_le_bytes()); // reserved
    }
    for entry in e820 {
        info.extend_from_slice(&entry.addr.to_le_bytes());
        info.extend_from_slice(&entry.size.to_le_bytes());
        // XEN_HVM_MEMMAP_TYPE_* use the e820 numbers.
        info.extend_from_slice(&(entry.kind as u32).to_le_bytes());
        info.extend_from_slice(&0u32.to_le_bytes());
    }
    mem.write_slice(&info, GuestAddress(PVH_INFO_START))
        .map_err(|source| Error::Memory {
            what: "PVH start info",
            addr: PVH_INFO_START,
            source,
        })?;
    Ok(GuestAddress(PVH_INFO_START))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::e820::{self, E820Kind};
    use crate::kernel::{self, testimg, BootMode};
    use crate::layout::CMDLINE_START;
    use crate::memory::MemoryLayout;
    use std::io::Cursor;
    use std::path::Path;
    use vm_memory::GuestMemoryMmap;

    fn read(m: &GuestMemoryMmap, at: GuestAddress, len: usize) -> Vec<u8> {
        let mut v = vec![0u8; len];
        m.read_slice(&mut v, at).unwrap();
        v
    }

    fn guest() -> (MemoryLayout, GuestMemoryMmap) {
        let l = MemoryLayout::plan(4 << 30, 40).unwrap();
        let m = GuestMemoryMmap::from_ranges(&l.ram_regions()).unwrap();
        (l, m)
    }

    #[test]
    fn zero_page_fields_read_back() {
        let (l, m) = guest();
        let k = kernel::load(
            &m,
            &mut Cursor::new(testimg::bzimage(0x2000)),
            Path::new("k"),
        )
        .unwrap();
        let map = e820::build(&l);
        let cmdline = Placement {
            addr: GuestAddress(CMDLINE_START),
            len: 12,
        };
        let initrd = Placement {
            addr: GuestAddress(0x7f00_0000),
            len: 0x12345,
        };
        let at =
            write_linux_boot_params(&m, &k, cmdline, Some(initrd), &map, GuestAddress(0xe0000))
                .unwrap();
        assert_eq!(at, GuestAddress(ZERO_PAGE_START));
        let bp: boot_params = m.read_obj(at).unwrap();
        assert_eq!({ bp.hdr.header }, HDRS);
        assert_eq!({ bp.hdr.version }, 0x020f);
        assert_eq!({ bp.hdr.type_of_loader }, 0xff);
        assert_eq!(
            bp.hdr.loadflags & (CAN_USE_HEAP | LOADED_HIGH),
            CAN_USE_HEAP | LOADED_HIGH
        );
        assert_eq!({ bp.hdr.cmd_line_ptr }, CMDLINE_START as u32);
        assert_eq!({ bp.hdr.ramdisk_image }, 0x7f00_0000);
        assert_eq!({ bp.hdr.ramdisk_size }, 0x12345);
        assert_eq!({ bp.ext_ramdisk_image }, 0);
        assert_eq!({ bp.acpi_rsdp_addr }, 0xe0000);
        assert_eq!(bp.e820_entries as usize, map.len());
        for (got, want) in bp.e820_table.iter().zip(&map) {
            assert_eq!(
                ({ got.addr }, { got.size }, { got.r#type }),
                (want.addr, want.size, want.kind as u32)
            );
        }
        // Also the raw bytes at the documented offsets.
        let raw = read(&m, at, 4096);
        assert_eq!(raw[0x1e8] as usize, map.len());
        assert_eq!(&raw[0x202..0x206], b"HdrS");
        assert_eq!(
            u32::from_le_bytes(raw[0x228..0x22c].try_into().unwrap()),
            CMDLINE_START as u32
        );
        assert_eq!(
            u64::from_le_bytes(raw[0x70..0x78].try_into().unwrap()),
            0xe0000
        );
        let e1 = 0x2d0 + 20;
        assert_eq!(
            u64::from_le_bytes(raw[e1..e1 + 8].try_into().unwrap()),
            map[1].addr
        );
    }

    #[test]
    fn elf_kernel_gets_a_synthetic_header() {
        let (l, m) = guest();
        let k = LoadedKernel {
            entry: GuestAddress(0x100_0000),
            mode: BootMode::Linux64,
            setup_header: None,
            kernel_end: GuestAddress(0x200_0000),
        };
        let cmdline = Placement {
            addr: GuestAddress(CMDLINE_START),
            len: 1,
        };
        let at = write_linux_boot_params(
            &m,
            &k,
            cmdline,
            None,
            &e820::build(&l),
            GuestAddress(0xe0000),
        )
        .unwrap();
        let bp: boot_params = m.read_obj(at).unwrap();
        assert_eq!({ bp.hdr.boot_flag }, BOOT_FLAG);
        assert_eq!({ bp.hdr.header }, HDRS);
        assert_eq!({ bp.hdr.ramdisk_image }, 0);
        assert_eq!({ bp.hdr.ramdisk_size }, 0);
    }

    #[test]
    fn too_many_e820_entries() {
        let (_, m) = guest();
        let k = LoadedKernel {
            entry: GuestAddress(0x100_0000),
            mode: BootMode::Linux64,
            setup_header: None,
            kernel_end: GuestAddress(0x200_0000),
        };
        let map = vec![
            E820Entry {
                addr: 0,
                size: 0x1000,
                kind: E820Kind::Ram
            };
            129
        ];
        let cmdline = Placement {
            addr: GuestAddress(CMDLINE_START),
            len: 1,
        };
        let err =
            write_linux_boot_params(&m, &k, cmdline, None, &map, GuestAddress(0)).unwrap_err();
        assert!(err.to_string().contains("129 e820 entries"), "{err}");
    }

    #[test]
    fn pvh_start_info_reads_back() {
        let (l, m) = guest();
        let map = e820::build(&l);
        let cmdline = Placement {
            addr: GuestAddress(CMDLINE_START),
            len: 5,
        };
        let initrd = Placement {
            addr: GuestAddress(0x7000_0000),
            len: 0x4242,
        };
        let at =
            write_pvh_start_info(&m, cmdline, Some(initrd), &map, GuestAddress(0xe0000)).unwrap();
        assert_eq!(at, GuestAddress(PVH_INFO_START));
        let raw = read(&m, at, 56);
        let u32_at = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap());
        let u64_at = |o: usize| u64::from_le_bytes(raw[o..o + 8].try_into().unwrap());
        assert_eq!(u32_at(0), 0x336e_c578);
        assert_eq!(u32_at(4), 1);
        assert_eq!(u32_at(12), 1); // nr_modules
        assert_eq!(u64_at(24), CMDLINE_START);
        assert_eq!(u64_at(32), 0xe0000);
        assert_eq!(u32_at(48) as usize, map.len());
        let modlist = u64_at(16);
        let module: [u64; 2] = m.read_obj(GuestAddress(modlist)).unwrap();
        assert_eq!(module, [0x7000_0000, 0x4242]);
        let memmap = u64_at(40);
        assert!(memmap + 24 * map.len() as u64 <= ZERO_PAGE_START);
        for (i, want) in map.iter().enumerate() {
            let e: [u64; 3] = m.read_obj(GuestAddress(memmap + 24 * i as u64)).unwrap();
            assert_eq!(e, [want.addr, want.size, want.kind as u64]);
        }
        // Without an initramfs there are no modules.
        write_pvh_start_info(&m, cmdline, None, &map, GuestAddress(0xe0000)).unwrap();
        let raw = read(&m, at, 56);
        assert_eq!(&raw[12..24], &[0u8; 12]);
    }
}
