//! Helpers shared by the API and lifecycle tests: real-mode payloads (they run on any
//! KVM, including this machine's software one), temporary directories, waiting.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// COM1 data port.
pub const COM1: u16 = 0x3f8;
/// High byte of PM1a_STS: bit 0 is PWRBTN_STS.
pub const PM1_STS_HIGH: u16 = 0x601;
/// PM1a_CNT.
pub const PM1_CNT: u16 = 0x604;

/// A few 16-bit instructions.
#[derive(Default, Clone)]
pub struct Asm(pub Vec<u8>);

impl Asm {
    pub fn mov_dx(mut self, v: u16) -> Self {
        self.0.push(0xba);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn mov_al(mut self, v: u8) -> Self {
        self.0.extend_from_slice(&[0xb0, v]);
        self
    }
    pub fn mov_ax(mut self, v: u16) -> Self {
        self.0.push(0xb8);
        self.0.extend_from_slice(&v.to_le_bytes());
        self
    }
    pub fn out_b(mut self) -> Self {
        self.0.push(0xee);
        self
    }
    pub fn out_w(mut self) -> Self {
        self.0.push(0xef);
        self
    }
    pub fn print(self, s: &str) -> Self {
        s.bytes()
            .fold(self.mov_dx(COM1), |a, b| a.mov_al(b).out_b())
    }
    /// Spins until the ACPI power button has been pressed (PWRBTN_STS set), reading the
    /// status register the way a guest's ACPI code would.
    pub fn wait_power_button(mut self) -> Self {
        // loop: mov dx, 0x601; in al, dx; test al, 1; jz loop
        let start = self.0.len();
        self = self.mov_dx(PM1_STS_HIGH);
        self.0.extend_from_slice(&[0xec, 0xa8, 0x01, 0x74]);
        let back = start as isize - (self.0.len() as isize + 1);
        self.0.push(back as i8 as u8);
        self
    }
    /// S5 through PM1a_CNT: SLP_TYP=5, SLP_EN.
    pub fn acpi_poweroff(self) -> Self {
        self.mov_dx(PM1_CNT)
            .mov_ax((5 << 10) | (1 << 13))
            .out_w()
            .hlt_loop()
    }
    /// Reset through the i8042.
    pub fn i8042_reset(self) -> Self {
        self.mov_dx(0x64).mov_al(0xfe).out_b().hlt_loop()
    }
    /// hlt; jmp back to hlt
    pub fn hlt_loop(mut self) -> Self {
        self.0.extend_from_slice(&[0xf4, 0xeb, 0xfd]);
        self
    }
}

/// A temporary directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "conduit-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    /// Writes `code` to NAME.bin and returns its path.
    pub fn payload(&self, name: &str, code: &Asm) -> PathBuf {
        let p = self.0.join(format!("{name}.bin"));
        std::fs::write(&p, &code.0).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Polls `f` every 10 ms until it is true; panics with `what` after `limit`.
pub fn wait_until(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(
            t.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The content of a file, empty when it does not exist.
pub fn read(p: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
}
