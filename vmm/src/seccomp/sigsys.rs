//! What a seccomp violation looks like in `on` mode: the filter's `SECCOMP_RET_TRAP` raises
//! SIGSYS in the offending thread; this handler writes which kind of thread made which
//! system call and how to find every missing one (`--seccomp log`), then the process dies
//! of SIGSYS. The handler only reads thread-locals, formats into a stack buffer and calls
//! `write`, which every list allows.

use std::cell::Cell;
use std::sync::OnceLock;

use super::{syscall_names, ThreadKind, FILTER_FILE};

thread_local! {
    /// The filter kind installed in this thread.
    static KIND: Cell<Option<ThreadKind>> = const { Cell::new(None) };
    /// The thread's name (truncated), copied when the filter was installed.
    static NAME: Cell<[u8; 32]> = const { Cell::new([0; 32]) };
}

/// `si_code` of a SIGSYS raised by seccomp.
const SYS_SECCOMP: i32 = 1;

/// A system call number that no list allows (there is no such call on x86_64): made from
/// the handler, it traps again while SIGSYS is blocked (tests check no list has it).
pub(super) const NOT_A_SYSCALL: libc::c_long = 1000;

/// The SIGSYS fields of `siginfo_t` on x86_64 (`_sigsys` in the kernel's union).
#[repr(C)]
struct SigsysInfo {
    signo: i32,
    errno: i32,
    code: i32,
    _pad: i32,
    call_addr: *mut libc::c_void,
    syscall: i32,
    arch: u32,
}

/// Records the kind and name of the calling thread for the handler.
pub(super) fn set_thread(kind: ThreadKind, name: &str) {
    let mut buf = [0u8; 32];
    let n = name.len().min(buf.len());
    buf[..n].copy_from_slice(&name.as_bytes()[..n]);
    KIND.with(|k| k.set(Some(kind)));
    NAME.with(|k| k.set(buf));
}

/// Installs the handler (once per process).
pub(super) fn install_handler() -> std::io::Result<()> {
    static INSTALLED: OnceLock<Result<(), i32>> = OnceLock::new();
    let result = INSTALLED.get_or_init(|| {
        // SAFETY: a zeroed sigaction is valid; we set the handler, flags and an empty mask,
        // and sigaction only reads it.
        unsafe {
            let mut action: libc::sigaction = std::mem::zeroed();
            action.sa_sigaction = on_sigsys as *const () as usize;
            // SA_RESETHAND: after the first SIGSYS the action is the default one (dump core,
            // end the process); no SA_NODEFER, so SIGSYS stays blocked in the handler.
            action.sa_flags = libc::SA_SIGINFO | libc::SA_RESETHAND | libc::SA_ONSTACK;
            libc::sigemptyset(&mut action.sa_mask);
            if libc::sigaction(libc::SIGSYS, &action, std::ptr::null_mut()) != 0 {
                return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0));
            }
        }
        Ok(())
    });
    result.map_err(std::io::Error::from_raw_os_error)
}

/// A line built without allocating (signal handlers must not).
struct Line {
    buf: [u8; 512],
    len: usize,
}

impl Line {
    fn new() -> Self {
        Line {
            buf: [0; 512],
            len: 0,
        }
    }

    fn push(&mut self, s: &[u8]) -> &mut Self {
        let n = s.len().min(self.buf.len() - self.len);
        self.buf[self.len..self.len + n].copy_from_slice(&s[..n]);
        self.len += n;
        self
    }

    fn push_num(&mut self, mut v: u64) -> &mut Self {
        let mut digits = [0u8; 20];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..])
    }
}

/// The message for a trapped call `nr` in a thread of `kind` named `name`.
fn message(kind: Option<ThreadKind>, name: &[u8], nr: i32) -> Line {
    let mut line = Line::new();
    let kind = kind.map_or("unfiltered", ThreadKind::name);
    let call = usize::try_from(nr)
        .ok()
        .and_then(|i| syscall_names::X86_64.get(i))
        .filter(|n| !n.is_empty())
        .map_or("unknown", |n| n);
    line.push(b"conduit: seccomp: the ")
        .push(kind.as_bytes())
        .push(b" thread \"")
        .push(name)
        .push(b"\" made system call ")
        .push_num(u64::from(nr.unsigned_abs()))
        .push(b" (")
        .push(call.as_bytes())
        .push(b"), which is not on its allow-list (filter \"")
        .push(kind.as_bytes())
        .push(b"\" in ")
        .push(FILTER_FILE.as_bytes())
        .push(b"): stopping with SIGSYS. To find every missing call, run with --seccomp log: calls outside the lists then go through and the kernel logs each (dmesg or the audit log, type=1326 ... syscall=N).\n");
    line
}

extern "C" fn on_sigsys(_: libc::c_int, info: *mut libc::siginfo_t, _: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo_t for SA_SIGINFO handlers; for SIGSYS its
    // layout is SigsysInfo.
    let (code, nr) = unsafe {
        let s = &*info.cast::<SigsysInfo>();
        (s.code, s.syscall)
    };
    let line = if code == SYS_SECCOMP {
        let kind = KIND.with(Cell::get);
        let name = NAME.with(Cell::get);
        let len = name.iter().position(|b| *b == 0).unwrap_or(name.len());
        message(kind, &name[..len], nr)
    } else {
        let mut l = Line::new();
        l.push(b"conduit: SIGSYS (not from seccomp): stopping\n");
        l
    };
    // SAFETY: writing our own buffer to stderr; async-signal-safe.
    unsafe { libc::write(2, line.buf.as_ptr().cast(), line.len) };
    // SIGSYS is blocked while this handler runs: a call no filter allows traps again and the
    // kernel then forces SIGSYS's default action (core dump, the whole process ends).
    // SAFETY: a call that does not exist has no effect.
    unsafe { libc::syscall(NOT_A_SYSCALL) };
    // Not filtered (a SIGSYS sent with kill): SA_RESETHAND made the action the default one,
    // taken once this handler returns.
    // SAFETY: raise is async-signal-safe.
    unsafe { libc::raise(libc::SIGSYS) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_names_kind_thread_and_call() {
        let l = message(Some(ThreadKind::Vcpu), b"vcpu0", 41);
        let s = std::str::from_utf8(&l.buf[..l.len]).unwrap();
        assert!(
            s.starts_with(
                "conduit: seccomp: the vcpu thread \"vcpu0\" made system call 41 (socket)"
            ),
            "{s}"
        );
        assert!(
            s.contains("filter \"vcpu\" in resources/seccomp/x86_64.json"),
            "{s}"
        );
        assert!(s.contains("--seccomp log"), "{s}");
        assert!(s.ends_with('\n'));
        let l = message(None, b"main", 999);
        let s = std::str::from_utf8(&l.buf[..l.len]).unwrap();
        assert!(
            s.contains("unfiltered thread \"main\" made system call 999 (unknown)"),
            "{s}"
        );
    }

    #[test]
    fn line_numbers_and_overflow() {
        let mut l = Line::new();
        l.push_num(0).push(b" ").push_num(u64::MAX);
        assert_eq!(&l.buf[..l.len], b"0 18446744073709551615");
        let mut l = Line::new();
        for _ in 0..100 {
            l.push(b"0123456789");
        }
        assert_eq!(l.len, 512);
    }
}
