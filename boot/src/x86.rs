//! x86 boot CPU state: identity page tables, the boot GDT/IDT and the register values the
//! boot vCPU starts with. Nothing here knows KVM: the vmm converts [`SegmentDescriptor`] and
//! [`BootCpuState`] into `kvm_segment`/`kvm_sregs`/`kvm_regs`.
//!
//! GDT (at `BOOT_GDT_START`, 4 entries) — the same selectors in both boot modes:
//!
//! | selector | descriptor                                                       |
//! |----------|------------------------------------------------------------------|
//! | 0x00     | null                                                             |
//! | 0x08     | TSS: base 0, limit 0x67, busy (loaded into TR only)              |
//! | 0x10     | code: 64-bit (Linux64) or 32-bit flat (PVH) — Linux `__BOOT_CS` |
//! | 0x18     | data: flat read/write — Linux `__BOOT_DS`                        |
//!
//! Code and data sit at 0x10/0x18 as the Linux boot protocol (boot.rst) asks. In long mode a
//! TSS descriptor is 16 bytes and would run into 0x10, but only its hidden part (set through
//! `KVM_SET_SREGS`) matters: the guest never executes `ltr 0x08`, it loads its own GDT/TSS.

use vm_memory::{Bytes, GuestAddress, GuestMemoryBackend};

use crate::kernel::{BootMode, LoadedKernel};
use crate::layout::{
    BOOT_GDT_ENTRIES, BOOT_GDT_START, BOOT_IDT_START, BOOT_STACK_POINTER, PDPT_START, PD_START,
    PML4_START,
};

/// Selector of the TSS descriptor.
pub const TSS_SELECTOR: u16 = 0x08;
/// Selector of the code descriptor (Linux `__BOOT_CS`).
pub const CODE_SELECTOR: u16 = 0x10;
/// Selector of the data descriptor (Linux `__BOOT_DS`).
pub const DATA_SELECTOR: u16 = 0x18;

/// CR0.PE: protected mode.
pub const CR0_PE: u64 = 1 << 0;
/// CR0.ET: extension type (always 1 on modern CPUs).
pub const CR0_ET: u64 = 1 << 4;
/// CR0.PG: paging.
pub const CR0_PG: u64 = 1 << 31;
/// CR4.PAE: physical address extension (required for long mode).
pub const CR4_PAE: u64 = 1 << 5;
/// EFER.LME: long mode enable.
pub const EFER_LME: u64 = 1 << 8;
/// EFER.LMA: long mode active.
pub const EFER_LMA: u64 = 1 << 10;
/// RFLAGS bit 1 is reserved and always set.
pub const RFLAGS_RESERVED: u64 = 1 << 1;

const PAGE_PRESENT: u64 = 1 << 0;
const PAGE_RW: u64 = 1 << 1;
const PAGE_PS: u64 = 1 << 7;
/// Gigabytes identity-mapped by the boot page tables (one page directory each).
const MAPPED_GIB: u64 = 4;
// The page directories must end before the command line.
const _: () = assert!(PD_START + MAPPED_GIB * 0x1000 <= crate::layout::CMDLINE_START);

/// Raw GDT entries.
const GDT_NULL: u64 = 0;
/// TSS: present, DPL 0, system, type 0xB (busy 32/64-bit TSS), base 0, limit 0x67.
const GDT_TSS: u64 = 0x0000_8b00_0000_0067;
/// 64-bit code: G, L, present, DPL 0, type 0xB (execute/read, accessed), limit 0xfffff.
const GDT_CODE64: u64 = 0x00af_9b00_0000_ffff;
/// 32-bit code: G, D, present, DPL 0, type 0xB, base 0, limit 4 GiB.
const GDT_CODE32: u64 = 0x00cf_9b00_0000_ffff;
/// Data: G, B, present, DPL 0, type 0x3 (read/write, accessed), base 0, limit 4 GiB.
const GDT_DATA: u64 = 0x00cf_9300_0000_ffff;

/// Errors of writing boot CPU structures.
#[derive(Debug, thiserror::Error)]
pub enum Error {
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

fn write<M: GuestMemoryBackend>(
    mem: &M,
    what: &'static str,
    addr: u64,
    bytes: &[u8],
) -> Result<(), Error> {
    mem.write_slice(bytes, GuestAddress(addr))
        .map_err(|source| Error::Memory { what, addr, source })
}

/// A segment as the CPU caches it, decoded from a GDT entry; the fields are those of
/// `kvm_segment` (`limit` is in bytes, already scaled by the granularity bit).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SegmentDescriptor {
    /// Base address.
    pub base: u64,
    /// Limit in bytes (inclusive).
    pub limit: u32,
    /// Selector that refers to this descriptor.
    pub selector: u16,
    /// Type field (4 bits).
    pub type_: u8,
    /// Present.
    pub present: u8,
    /// Descriptor privilege level.
    pub dpl: u8,
    /// Default operation size (D/B).
    pub db: u8,
    /// Code/data (1) or system (0) descriptor.
    pub s: u8,
    /// 64-bit code segment.
    pub l: u8,
    /// Granularity (limit in 4 KiB units in the raw entry).
    pub g: u8,
    /// Available for software.
    pub avl: u8,
}

impl SegmentDescriptor {
    /// Decodes the 8-byte GDT `entry` found at `selector`.
    pub fn from_gdt_entry(selector: u16, entry: u64) -> Self {
        let bit = |n: u32| ((entry >> n) & 1) as u8;
        let base = ((entry >> 16) & 0xff_ffff) | (((entry >> 56) & 0xff) << 24);
        let raw_limit = ((entry & 0xffff) | ((entry >> 32) & 0xf_0000)) as u32;
        let g = bit(55);
        let limit = if g == 1 {
            (raw_limit << 12) | 0xfff
        } else {
            raw_limit
        };
        SegmentDescriptor {
            base,
            limit,
            selector,
            type_: ((entry >> 40) & 0xf) as u8,
            present: bit(47),
            dpl: ((entry >> 45) & 0x3) as u8,
            db: bit(54),
            s: bit(44),
            l: bit(53),
            g,
            avl: bit(52),
        }
    }
}

/// Base and limit of a descriptor table (GDTR/IDTR).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DescriptorTable {
    /// Guest-physical base.
    pub base: u64,
    /// Limit (size - 1).
    pub limit: u16,
}

/// The boot GDT as written to guest memory, decoded.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootGdt {
    /// GDTR value.
    pub table: DescriptorTable,
    /// CS.
    pub code: SegmentDescriptor,
    /// DS, ES, FS, GS and SS.
    pub data: SegmentDescriptor,
    /// TR.
    pub tss: SegmentDescriptor,
}

/// Writes the boot GDT for `mode` at `BOOT_GDT_START` (see the module docs for its layout).
pub fn write_gdt<M: GuestMemoryBackend>(mem: &M, mode: BootMode) -> Result<BootGdt, Error> {
    let code = match mode {
        BootMode::Linux64 => GDT_CODE64,
        BootMode::Pvh => GDT_CODE32,
    };
    let entries: [u64; BOOT_GDT_ENTRIES] = [GDT_NULL, GDT_TSS, code, GDT_DATA];
    let bytes: Vec<u8> = entries.iter().flat_map(|e| e.to_le_bytes()).collect();
    write(mem, "boot GDT", BOOT_GDT_START, &bytes)?;
    let at = |selector: u16| {
        SegmentDescriptor::from_gdt_entry(selector, entries[usize::from(selector / 8)])
    };
    Ok(BootGdt {
        table: DescriptorTable {
            base: BOOT_GDT_START,
            limit: (bytes.len() - 1) as u16,
        },
        code: at(CODE_SELECTOR),
        data: at(DATA_SELECTOR),
        tss: at(TSS_SELECTOR),
    })
}

/// Writes an empty IDT (one null gate) at `BOOT_IDT_START`: an exception before the kernel
/// installs its own IDT becomes a triple fault, which the vmm sees as a shutdown.
pub fn write_idt<M: GuestMemoryBackend>(mem: &M) -> Result<DescriptorTable, Error> {
    write(mem, "boot IDT", BOOT_IDT_START, &0u64.to_le_bytes())?;
    Ok(DescriptorTable {
        base: BOOT_IDT_START,
        limit: 7,
    })
}

/// Writes page tables identity-mapping the first 4 GiB with 2 MiB pages (PML4 at
/// `PML4_START`, one PDPT at `PDPT_START`, four PDs from `PD_START`) and returns CR3.
pub fn write_page_tables<M: GuestMemoryBackend>(mem: &M) -> Result<u64, Error> {
    write(
        mem,
        "boot PML4",
        PML4_START,
        &(PDPT_START | PAGE_PRESENT | PAGE_RW).to_le_bytes(),
    )?;
    let pdpt: Vec<u8> = (0..MAPPED_GIB)
        .flat_map(|i| ((PD_START + i * 0x1000) | PAGE_PRESENT | PAGE_RW).to_le_bytes())
        .collect();
    write(mem, "boot PDPT", PDPT_START, &pdpt)?;
    let pds: Vec<u8> = (0..MAPPED_GIB * 512)
        .flat_map(|i| ((i << 21) | PAGE_PRESENT | PAGE_RW | PAGE_PS).to_le_bytes())
        .collect();
    write(mem, "boot page directories", PD_START, &pds)?;
    Ok(PML4_START)
}

/// Register state of the boot vCPU, free of KVM types.
///
/// Segments: `cs` = `code`; `ds`, `es`, `fs`, `gs`, `ss` = `data`; `tr` = `tss`; LDT unused.
/// General-purpose registers not listed are zero.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BootCpuState {
    /// Instruction pointer: the kernel entry.
    pub rip: u64,
    /// Stack pointer (`BOOT_STACK_POINTER`).
    pub rsp: u64,
    /// Frame pointer (same as `rsp`).
    pub rbp: u64,
    /// Linux64: address of `boot_params`; PVH: 0.
    pub rsi: u64,
    /// PVH: address of `hvm_start_info`; Linux64: 0.
    pub rbx: u64,
    /// RFLAGS (reserved bit only: interrupts off).
    pub rflags: u64,
    /// CR0.
    pub cr0: u64,
    /// CR3 (page-table root; 0 for PVH, paging off).
    pub cr3: u64,
    /// CR4.
    pub cr4: u64,
    /// EFER.
    pub efer: u64,
    /// GDTR.
    pub gdt: DescriptorTable,
    /// IDTR.
    pub idt: DescriptorTable,
    /// CS.
    pub code: SegmentDescriptor,
    /// DS, ES, FS, GS, SS.
    pub data: SegmentDescriptor,
    /// TR.
    pub tss: SegmentDescriptor,
}

/// Writes the GDT, IDT and (for Linux64) page tables for `kernel.mode`, and returns the boot
/// vCPU state entering `kernel.entry` with `boot_info` (the zero page for Linux64, the
/// `hvm_start_info` for PVH) in `rsi`/`rbx`. Only the boot vCPU gets this state; the others
/// wait for INIT/SIPI from the guest.
pub fn setup_boot_cpu<M: GuestMemoryBackend>(
    mem: &M,
    kernel: &LoadedKernel,
    boot_info: GuestAddress,
) -> Result<BootCpuState, Error> {
    let gdt = write_gdt(mem, kernel.mode)?;
    let idt = write_idt(mem)?;
    let (cr0, cr3, cr4, efer, rsi, rbx) = match kernel.mode {
        BootMode::Linux64 => (
            CR0_PE | CR0_ET | CR0_PG,
            write_page_tables(mem)?,
            CR4_PAE,
            EFER_LME | EFER_LMA,
            boot_info.0,
            0,
        ),
        BootMode::Pvh => (CR0_PE | CR0_ET, 0, 0, 0, 0, boot_info.0),
    };
    Ok(BootCpuState {
        rip: kernel.entry.0,
        rsp: BOOT_STACK_POINTER,
        rbp: BOOT_STACK_POINTER,
        rsi,
        rbx,
        rflags: RFLAGS_RESERVED,
        cr0,
        cr3,
        cr4,
        efer,
        gdt: gdt.table,
        idt,
        code: gdt.code,
        data: gdt.data,
        tss: gdt.tss,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::layout::ZERO_PAGE_START;
    use vm_memory::GuestMemoryMmap;

    fn mem() -> GuestMemoryMmap {
        GuestMemoryMmap::from_ranges(&[(GuestAddress(0), 16 << 20)]).unwrap()
    }

    /// Walks the boot page tables like the MMU does for a 2 MiB mapping.
    fn translate(m: &GuestMemoryMmap, cr3: u64, va: u64) -> Option<u64> {
        let entry = |table: u64, index: u64| -> u64 {
            m.read_obj(GuestAddress((table & !0xfff) + index * 8))
                .unwrap()
        };
        let pml4e = entry(cr3, (va >> 39) & 0x1ff);
        if pml4e & PAGE_PRESENT == 0 {
            return None;
        }
        let pdpte = entry(pml4e & 0x000f_ffff_ffff_f000, (va >> 30) & 0x1ff);
        if pdpte & PAGE_PRESENT == 0 {
            return None;
        }
        let pde = entry(pdpte & 0x000f_ffff_ffff_f000, (va >> 21) & 0x1ff);
        if pde & PAGE_PRESENT == 0 || pde & PAGE_PS == 0 {
            return None;
        }
        Some((pde & 0x000f_ffff_ffe0_0000) | (va & 0x1f_ffff))
    }

    #[test]
    fn page_tables_identity_map_4gib() {
        let m = mem();
        let cr3 = write_page_tables(&m).unwrap();
        assert_eq!(cr3, PML4_START);
        for va in [
            0,
            0x1234_5678,
            0x100_0000,
            0xc000_0000,
            0xfee0_0000,
            0xffff_ffff,
        ] {
            assert_eq!(translate(&m, cr3, va), Some(va), "{va:#x}");
        }
        assert_eq!(translate(&m, cr3, 0x1_0000_0000), None);
    }

    #[test]
    fn gdt_entries_decode() {
        let m = mem();
        let gdt = write_gdt(&m, BootMode::Linux64).unwrap();
        assert_eq!(
            gdt.table,
            DescriptorTable {
                base: BOOT_GDT_START,
                limit: 31
            }
        );
        assert_eq!(BOOT_GDT_START + 32, BOOT_IDT_START);
        let c = gdt.code;
        assert_eq!((c.selector, c.base, c.limit), (0x10, 0, 0xffff_ffff));
        assert_eq!(
            (c.type_, c.s, c.present, c.dpl, c.l, c.db, c.g),
            (0xb, 1, 1, 0, 1, 0, 1)
        );
        let d = gdt.data;
        assert_eq!((d.selector, d.base, d.limit), (0x18, 0, 0xffff_ffff));
        assert_eq!(
            (d.type_, d.s, d.present, d.l, d.db, d.g),
            (0x3, 1, 1, 0, 1, 1)
        );
        let t = gdt.tss;
        assert_eq!(
            (t.selector, t.base, t.limit, t.type_, t.s, t.present, t.g),
            (0x08, 0, 0x67, 0xb, 0, 1, 0)
        );
        // Memory holds what was decoded.
        let raw: [u64; 4] = m.read_obj(GuestAddress(BOOT_GDT_START)).unwrap();
        assert_eq!(raw[0], 0);
        assert_eq!(SegmentDescriptor::from_gdt_entry(0x10, raw[2]), c);

        let pvh = write_gdt(&m, BootMode::Pvh).unwrap();
        assert_eq!(
            (pvh.code.l, pvh.code.db, pvh.code.limit),
            (0, 1, 0xffff_ffff)
        );
        assert_eq!(pvh.data, d);
    }

    #[test]
    fn decode_non_flat_descriptor() {
        // base 0x12345678, raw limit 0x54321, type 0x2, S, DPL 3, present, AVL, G=0.
        let entry = 0x4321u64
            | (0x34_5678 << 16)
            | (0x2 << 40)
            | (1 << 44)
            | (3 << 45)
            | (1 << 47)
            | (0x5 << 48)
            | (1 << 52)
            | (0x12 << 56);
        let s = SegmentDescriptor::from_gdt_entry(0x2b, entry);
        assert_eq!((s.base, s.limit, s.selector), (0x1234_5678, 0x5_4321, 0x2b));
        assert_eq!(
            (s.type_, s.s, s.dpl, s.present, s.avl, s.g, s.l, s.db),
            (2, 1, 3, 1, 1, 0, 0, 0)
        );
        // With G set the limit counts 4 KiB pages.
        let s = SegmentDescriptor::from_gdt_entry(0x2b, entry | (1 << 55));
        assert_eq!((s.g, s.limit), (1, 0x5432_1fff));
    }

    #[test]
    fn linux64_state() {
        let m = mem();
        let k = LoadedKernel {
            entry: GuestAddress(0x100200),
            mode: BootMode::Linux64,
            setup_header: None,
            kernel_end: GuestAddress(0x200_0000),
        };
        let s = setup_boot_cpu(&m, &k, GuestAddress(ZERO_PAGE_START)).unwrap();
        assert_eq!(s.rip, 0x100200);
        assert_eq!(s.rsi, ZERO_PAGE_START);
        assert_eq!(s.rbx, 0);
        assert_eq!(s.cr3, PML4_START);
        assert_eq!(s.cr0 & (CR0_PE | CR0_PG), CR0_PE | CR0_PG);
        assert_eq!(s.cr4 & CR4_PAE, CR4_PAE);
        assert_eq!(s.efer, EFER_LME | EFER_LMA);
        assert_eq!(s.code.l, 1);
        assert_eq!(s.rflags, 2);
        assert_eq!(
            s.idt,
            DescriptorTable {
                base: BOOT_IDT_START,
                limit: 7
            }
        );
    }

    #[test]
    fn pvh_state() {
        let m = mem();
        let k = LoadedKernel {
            entry: GuestAddress(0x100_0400),
            mode: BootMode::Pvh,
            setup_header: None,
            kernel_end: GuestAddress(0x200_0000),
        };
        let s = setup_boot_cpu(&m, &k, GuestAddress(0x6000)).unwrap();
        assert_eq!((s.rip, s.rbx, s.rsi), (0x100_0400, 0x6000, 0));
        assert_eq!(s.cr0 & CR0_PG, 0);
        assert_eq!(s.cr0 & CR0_PE, CR0_PE);
        assert_eq!((s.cr3, s.cr4, s.efer), (0, 0, 0));
        assert_eq!((s.code.l, s.code.db), (0, 1));
        assert_eq!(s.tss.type_, 0xb);
    }
}
