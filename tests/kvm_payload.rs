//! KVM payload tests: tiny real-mode guests, assembled here, run through Conduit's VM recipe
//! on this machine's /dev/kvm (any KVM will do, even one that cannot boot Linux). They prove
//! the vCPU loop, the PIO bus, COM1, the PCI config ports and the ACPI/i8042 exits.

use std::path::PathBuf;
use std::sync::Mutex;

use vmm::config::{OnReboot, PayloadConfig, SerialMode, VmConfig};
use vmm::event_loop::Outcome;

/// The VM recipe blocks signals and installs handlers process-wide: one VM at a time.
static ONE_VM: Mutex<()> = Mutex::new(());

/// A minimal 16-bit assembler for the few instructions the payloads need.
#[derive(Default)]
struct Asm(Vec<u8>);

impl Asm {
    fn mov_dx(mut self, v: u16) -> Self {
        self.0.push(0xba);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn mov_al(mut self, v: u8) -> Self {
        self.0.extend_from_slice(&[0xb0, v]);
        self
    }
    fn mov_ax(mut self, v: u16) -> Self {
        self.0.push(0xb8);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    fn mov_eax(mut self, v: u32) -> Self {
        self.0.extend_from_slice(&[0x66, 0xb8]);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    /// out dx, al
    fn out_b(mut self) -> Self {
        self.0.push(0xee);
        self
    }
    /// out dx, ax
    fn out_w(mut self) -> Self {
        self.0.push(0xef);
        self
    }
    /// out dx, eax
    fn out_d(mut self) -> Self {
        self.0.extend_from_slice(&[0x66, 0xef]);
        self
    }
    /// in eax, dx
    fn in_d(mut self) -> Self {
        self.0.extend_from_slice(&[0x66, 0xed]);
        self
    }
    /// shr eax, 8
    fn shr_eax_8(mut self) -> Self {
        self.0.extend_from_slice(&[0x66, 0xc1, 0xe8, 0x08]);
        self
    }
    fn print(self, s: &str) -> Self {
        s.bytes()
            .fold(self.mov_dx(0x3f8), |a, b| a.mov_al(b).out_b())
    }
    /// Writes the four bytes of eax to COM1, low byte first.
    fn print_eax_bytes(self) -> Self {
        let mut a = self.mov_dx(0x3f8);
        for i in 0..4 {
            a = a.out_b();
            if i < 3 {
                a = a.shr_eax_8();
            }
        }
        a
    }
    /// Selects `address` through 0xCF8 and prints the config dword 0xCFC reads.
    fn print_config_dword(self, address: u32) -> Self {
        self.mov_dx(0xcf8)
            .mov_eax(address)
            .out_d()
            .mov_dx(0xcfc)
            .in_d()
            .print_eax_bytes()
    }
    /// With dx = 0xCF8: one more config-address write (0x8000_f800), then prints what
    /// 0xCF8 reads back and the host bridge's ID dword (0x8000_0000 through 0xCFC).
    fn print_last_address_and_bridge_id(self) -> Self {
        self.mov_eax(0x8000_f800)
            .out_d()
            .in_d()
            .print_eax_bytes()
            .print_config_dword(0x8000_0000)
    }
    /// S5 through the ACPI PM1a control register: SLP_TYP=5, SLP_EN.
    fn acpi_poweroff(self) -> Self {
        self.mov_dx(0x604)
            .mov_ax((5 << 10) | (1 << 13))
            .out_w()
            .hlt_loop()
    }
    /// Pulse the CPU reset line through the i8042.
    fn i8042_reset(self) -> Self {
        self.mov_dx(0x64).mov_al(0xfe).out_b().hlt_loop()
    }
    /// hlt; jmp back to hlt
    fn hlt_loop(mut self) -> Self {
        self.0.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
        self
    }
}

fn serial_file(name: &str) -> PathBuf {
    let p = std::env::temp_dir().join(format!("conduit-payload-{}-{name}.log", std::process::id()));
    let _ = std::fs::remove_file(&p);
    p
}

fn run(code: Vec<u8>, cpus: u8, name: &str) -> (Outcome, Vec<u8>) {
    run_with(code, cpus, name, false)
}

fn run_with(code: Vec<u8>, cpus: u8, name: &str, hugepages: bool) -> (Outcome, Vec<u8>) {
    let _one = ONE_VM.lock().unwrap_or_else(|p| p.into_inner());
    let log = serial_file(name);
    let payload = serial_file(&format!("{name}-code"));
    std::fs::write(&payload, &code).expect("write the payload");
    let config = VmConfig {
        kernel: None,
        payload: Some(PayloadConfig {
            path: payload.clone(),
        }),
        cpus,
        memory_bytes: 64 << 20,
        hugepages,
        serial: SerialMode::File(log.clone()),
        on_reboot: OnReboot::Exit,
        devices: Vec::new(),
        iommu: Default::default(),
    };
    let outcome = vmm::vm::run(&config).expect("the payload VM runs");
    let out = std::fs::read(&log).unwrap_or_default();
    let _ = std::fs::remove_file(&log);
    let _ = std::fs::remove_file(&payload);
    (outcome, out)
}

#[test]
fn uart_output_then_acpi_poweroff() {
    let (outcome, out) = run(
        Asm::default().print("hello conduit\n").acpi_poweroff().0,
        1,
        "uart",
    );
    assert_eq!(String::from_utf8_lossy(&out), "hello conduit\n");
    assert_eq!(outcome, Outcome::PowerOff);
}

#[test]
fn i8042_reset_ends_the_vm_as_a_reboot() {
    let (outcome, out) = run(Asm::default().print("r").i8042_reset().0, 2, "reset");
    assert_eq!(out, b"r");
    assert_eq!(outcome, Outcome::Reset);
}

#[test]
fn host_bridge_is_visible_through_config_ports() {
    // Read vendor/device of 00:00.0 through 0xCF8/0xCFC, and of an empty slot (00:1f.0).
    let code = Asm::default()
        .print_config_dword(0x8000_0000)
        .print_config_dword(0x8000_f800)
        .acpi_poweroff()
        .0;
    let (outcome, out) = run(code, 1, "pci");
    assert_eq!(outcome, Outcome::PowerOff);
    assert_eq!(out.len(), 8, "two dwords: {out:02x?}");
    let host_bridge = u32::from_le_bytes(out[0..4].try_into().unwrap());
    assert_ne!(
        host_bridge & 0xffff,
        0xffff,
        "a host bridge answers at 00:00.0"
    );
    assert_eq!(
        u32::from_le_bytes(out[4..8].try_into().unwrap()),
        0xffff_ffff,
        "empty slot"
    );
}

/// 0xCF8 writes may be queued by KVM (coalesced PIO) instead of exiting: 400 of them (more
/// than the ring holds, so KVM also exits when it is full) must take effect in order, so
/// reading 0xCF8 back gives the last one and 0xCFC reads the device it addresses.
#[test]
fn config_address_writes_take_effect_in_order() {
    // First a few writes (queued, never a full ring), then 400.
    let mut code = Asm::default()
        .mov_dx(0xcf8)
        .mov_eax(0x8000_1000)
        .out_d()
        .print_last_address_and_bridge_id()
        .mov_dx(0xcf8);
    // mov ecx, 400
    code.0.extend_from_slice(&[0x66, 0xb9]);
    code.0.extend_from_slice(&400u32.to_le_bytes());
    // loop: mov eax, ecx; shl eax, 8; or eax, 0x8000_0000; out dx, eax; loop loop
    code.0
        .extend_from_slice(&[0x66, 0x89, 0xc8, 0x66, 0xc1, 0xe0, 0x08, 0x66, 0x0d]);
    code.0.extend_from_slice(&0x8000_0000u32.to_le_bytes());
    code.0.extend_from_slice(&[0x66, 0xef, 0xe2, 0xef]);
    let code = code.print_last_address_and_bridge_id().acpi_poweroff().0;
    let (outcome, out) = run(code, 1, "pci-order");
    assert_eq!(outcome, Outcome::PowerOff);
    assert_eq!(out.len(), 16, "four dwords: {out:02x?}");
    let dword = |i: usize| u32::from_le_bytes(out[i * 4..i * 4 + 4].try_into().unwrap());
    for (round, first) in [("few writes", 0), ("400 writes", 2)] {
        assert_eq!(
            dword(first),
            0x8000_f800,
            "{round}: 0xCF8 reads back the last address written"
        );
        assert_eq!(
            dword(first + 1),
            0x0008_1b36,
            "{round}: 00:00.0 is the host bridge 1b36:0008"
        );
    }
}

/// `--hugepages`: guest RAM on 2 MiB pages. The test reserves the 32 pages a 64 MiB guest
/// needs (it runs as root, as CI does) and gives them back afterwards.
#[test]
fn hugepage_backed_guest_memory() {
    const NR: &str = "/proc/sys/vm/nr_hugepages";
    let read = |p: &str| -> u64 {
        std::fs::read_to_string(p)
            .unwrap_or_else(|e| panic!("cannot read {p}: {e}"))
            .trim()
            .parse()
            .unwrap()
    };
    let before = read(NR);
    std::fs::write(NR, format!("{}\n", before + 32))
        .unwrap_or_else(|e| panic!("cannot reserve hugepages through {NR} (needs root): {e}"));
    let free = read("/sys/kernel/mm/hugepages/hugepages-2048kB/free_hugepages");
    let result = std::panic::catch_unwind(|| {
        assert!(
            free >= 32,
            "only {free} free 2 MiB pages after reserving 32 more"
        );
        run_with(
            Asm::default().print("huge\n").acpi_poweroff().0,
            1,
            "huge",
            true,
        )
    });
    let _ = std::fs::write(NR, format!("{before}\n"));
    let (outcome, out) = result.unwrap_or_else(|p| std::panic::resume_unwind(p));
    assert_eq!(String::from_utf8_lossy(&out), "huge\n");
    assert_eq!(outcome, Outcome::PowerOff);
}
