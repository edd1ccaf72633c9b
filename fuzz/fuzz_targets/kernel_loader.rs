//! The kernel loader fed any file (bzImage, ELF vmlinux with or without a PVH note, or
//! neither) into a 64 MiB guest, then, when it loads, the rest of the boot chain that reads
//! its header: command line against its limit, an initramfs below its `initrd_addr_max`,
//! boot params or PVH start info, boot vCPU state. A bad file is a clean error naming the
//! file; a loaded kernel is entered inside guest RAM (a bzImage at its 64-bit entry) and
//! ends inside guest RAM.
#![no_main]

use std::io::Cursor;
use std::path::Path;
use std::sync::OnceLock;

use boot::kernel::{self, BootMode};
use boot::layout::HIMEM_START;
use boot::{cmdline, e820, initramfs, params, x86, MemoryLayout};
use libfuzzer_sys::fuzz_target;
use vm_memory::{GuestAddress, GuestMemoryMmap};

const GUEST_RAM: u64 = 64 << 20;
const KERNEL: &str = "/fuzz/vmlinuz";
const INITRD: &str = "/fuzz/initrd.img";

fn guest() -> &'static (MemoryLayout, GuestMemoryMmap) {
    static GUEST: OnceLock<(MemoryLayout, GuestMemoryMmap)> = OnceLock::new();
    GUEST.get_or_init(|| {
        let layout = MemoryLayout::plan(GUEST_RAM, 40).unwrap_or_else(|e| panic!("{e}"));
        let mem = GuestMemoryMmap::from_ranges(&layout.ram_regions())
            .unwrap_or_else(|e| panic!("guest memory: {e}"));
        (layout, mem)
    })
}

fuzz_target!(|data: &[u8]| {
    let (layout, mem) = guest();
    let k = match kernel::load(mem, &mut Cursor::new(data), Path::new(KERNEL)) {
        Ok(k) => k,
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(KERNEL), "error does not name the file: {msg}");
            return;
        }
    };
    assert!(k.entry.0 < GUEST_RAM, "entry {:#x} outside RAM", k.entry.0);
    assert!(
        k.kernel_end.0 <= GUEST_RAM && k.kernel_end.0 > HIMEM_START,
        "kernel end {:#x}",
        k.kernel_end.0
    );
    if k.setup_header.is_some() {
        assert_eq!(k.mode, BootMode::Linux64);
        assert_eq!(k.entry.0, HIMEM_START + 0x200, "bzImage 64-bit entry");
    }

    let Ok(cmd) = cmdline::write(mem, "console=ttyS0", &k) else {
        assert!(k.cmdline_limit() < 13, "limit {}", k.cmdline_limit());
        return;
    };
    let initrd = vec![0x30u8; 0x3000];
    let initrd = match initramfs::load(mem, layout, &mut Cursor::new(initrd), Path::new(INITRD), &k)
    {
        Ok(p) => {
            assert!(p.addr.0 >= k.kernel_end.0, "initramfs over the kernel");
            if let Some(max) = k.initrd_addr_max() {
                assert!(
                    p.addr.0 + p.len as u64 - 1 <= max,
                    "initramfs above initrd_addr_max"
                );
            }
            Some(p)
        }
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(INITRD), "error does not name the file: {msg}");
            None
        }
    };
    let map = e820::build(layout);
    let rsdp = GuestAddress(boot::layout::ACPI_START);
    let info = match k.mode {
        BootMode::Linux64 => params::write_linux_boot_params(mem, &k, cmd, initrd, &map, rsdp),
        BootMode::Pvh => params::write_pvh_start_info(mem, cmd, initrd, &map, rsdp),
    };
    let info = info.unwrap_or_else(|e| panic!("boot params for a loaded kernel: {e}"));
    if let Err(e) = x86::setup_boot_cpu(mem, &k, info) {
        panic!("boot vCPU for a loaded kernel: {e}");
    }
});
