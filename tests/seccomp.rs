//! seccomp for real: a call outside a thread's list ends the process with SIGSYS (and says
//! which thread made which call), `log` lets it through; conduit's threads and a library
//! VM's threads run under their filters.
//!
//! The SIGSYS tests re-run this test binary as a child (`CHILD_ENV` picks what the child
//! does): the child installs a filter through the library and calls `socket`, which no list
//! allows; the parent checks how the child ended.

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use common::{read, wait_until, Asm, TempDir};
use vmm::config::{SerialMode, VmConfig};
use vmm::seccomp::{SeccompFilters, SeccompMode, ThreadKind};
use vmm::vm::Vm;

const CHILD_ENV: &str = "CONDUIT_SECCOMP_TEST_CHILD";
const LIMIT: Duration = Duration::from_secs(20);

/// Runs this binary's `child` test with `CHILD_ENV=mode`.
fn run_child(mode: &str) -> Output {
    Command::new(std::env::current_exe().unwrap())
        .args(["child", "--exact", "--nocapture", "--test-threads=1"])
        .env(CHILD_ENV, mode)
        .output()
        .unwrap()
}

/// In the child: a thread named like a vCPU installs the `vcpu` filter of `mode`, then calls
/// `socket`. Without `CHILD_ENV` (the normal test run) it does nothing.
#[test]
fn child() {
    let mode = match std::env::var(CHILD_ENV).as_deref() {
        Ok("on") => SeccompMode::On,
        Ok("log") => SeccompMode::Log,
        _ => return,
    };
    // SIGSYS dumps core: not here.
    let no_core = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: setrlimit reads the struct.
    assert_eq!(unsafe { libc::setrlimit(libc::RLIMIT_CORE, &no_core) }, 0);
    let filters = SeccompFilters::builtin(mode).unwrap();
    std::thread::Builder::new()
        .name("vcpu7".into())
        .spawn(move || {
            filters.apply(ThreadKind::Vcpu).unwrap();
            println!("CHILD filtered");
            // SAFETY: creating a socket and closing it; no memory is involved.
            let fd = unsafe { libc::socket(libc::AF_UNIX, libc::SOCK_STREAM, 0) };
            println!("CHILD survived socket() = {}", fd >= 0);
            // SAFETY: closing the fd just created.
            unsafe { libc::close(fd) };
        })
        .unwrap()
        .join()
        .unwrap();
}

#[test]
fn a_call_outside_the_vcpu_list_ends_the_process_with_sigsys() {
    let out = run_child("on");
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGSYS),
        "{:?}\n{stdout}\n{stderr}",
        out.status
    );
    assert!(stdout.contains("CHILD filtered"), "{stdout}");
    assert!(!stdout.contains("CHILD survived"), "{stdout}");
    let nr = libc::SYS_socket;
    assert!(
        stderr.contains(&format!(
            "conduit: seccomp: the vcpu thread \"vcpu7\" made system call {nr} (socket), which is not on its allow-list"
        )),
        "{stderr}"
    );
    assert!(stderr.contains("--seccomp log"), "{stderr}");
}

#[test]
fn log_mode_lets_the_call_through() {
    let out = run_child("log");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{:?}\n{stdout}", out.status);
    assert!(
        stdout.contains("CHILD survived socket() = true"),
        "{stdout}"
    );
}

/// `(thread name, Seccomp mode, number of filters)` of every thread of process `pid`.
fn thread_filters(pid: u32) -> Vec<(String, u32, u32)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let dir = task.unwrap().path();
        let (Ok(comm), Ok(status)) = (
            std::fs::read_to_string(dir.join("comm")),
            std::fs::read_to_string(dir.join("status")),
        ) else {
            continue; // the thread ended meanwhile
        };
        let field = |key: &str| -> u32 {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .map(|v| v.trim().parse().unwrap())
                .unwrap_or_else(|| panic!("no {key} in {status}"))
        };
        threads.push((
            comm.trim().to_string(),
            field("Seccomp:"),
            field("Seccomp_filters:"),
        ));
    }
    threads.sort();
    threads
}

#[test]
fn a_library_vm_runs_its_vm_and_vcpu_threads_under_their_filters() {
    let dir = TempDir::new("seccomp-lib");
    let log = dir.path().join("serial.log");
    let code = Asm::default().print("up\n").hlt_loop();
    let mut config = VmConfig::payload(dir.payload("up", &code));
    config.memory_bytes = 64 << 20;
    config.cpus = 2;
    config.serial = SerialMode::File(log.clone());
    let vm = Vm::create(config).unwrap();
    vm.boot().unwrap();
    wait_until("the payload to start", LIMIT, || read(&log) == "up\n");
    // vcpu0 prints while vcpu1's thread may still be starting (named and filtered by
    // itself): wait for it to have its filters, then check every thread.
    wait_until("vcpu1 to install its filter", LIMIT, || {
        thread_filters(std::process::id())
            .iter()
            .any(|t| t.0 == "vcpu1" && t.2 == 2)
    });
    let threads = thread_filters(std::process::id());
    let of = |name: &str| threads.iter().find(|t| t.0 == name).cloned();
    // Seccomp 2 = filter mode. The VM thread: vmm; vCPUs: vmm (inherited) and vcpu.
    assert_eq!(of("vm"), Some(("vm".into(), 2, 1)), "{threads:?}");
    assert_eq!(of("vcpu0"), Some(("vcpu0".into(), 2, 2)), "{threads:?}");
    assert_eq!(of("vcpu1"), Some(("vcpu1".into(), 2, 2)), "{threads:?}");
    vm.kill().unwrap();
}

fn conduit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conduit"))
}

fn ctl(socket: &Path, args: &[&str]) {
    let out = conduit()
        .arg("ctl")
        .arg("--api-socket")
        .arg(socket)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "ctl {args:?}: {out:?}");
}

/// The threads of `conduit serve --seccomp MODE` with a VM running.
fn serve_threads(mode: &str) -> Vec<(String, u32, u32)> {
    let dir = TempDir::new(&format!("seccomp-serve-{mode}"));
    let socket = dir.path().join("api.sock");
    let log = dir.path().join("serial.log");
    let mut child = conduit()
        .args(["serve", "--seccomp", mode, "--api-socket"])
        .arg(&socket)
        .spawn()
        .unwrap();
    wait_until("the socket", LIMIT, || socket.exists());
    let payload = dir.payload("up", &Asm::default().print("up\n").hlt_loop());
    let config = dir.path().join("vm.json");
    std::fs::write(
        &config,
        serde_json::json!({"payload": {"path": payload}, "memory": "64M", "serial": {"file": log}})
            .to_string(),
    )
    .unwrap();
    ctl(&socket, &["create", config.to_str().unwrap()]);
    ctl(&socket, &["boot"]);
    wait_until("the payload to start", LIMIT, || read(&log) == "up\n");
    let threads = thread_filters(child.id());
    ctl(&socket, &["shutdown-vmm"]);
    let status = child.wait().unwrap();
    assert_eq!(status.code(), Some(0), "{threads:?}");
    threads
}

#[test]
fn every_thread_of_conduit_serve_runs_under_its_filter() {
    let threads = serve_threads("on");
    let names: Vec<&str> = threads.iter().map(|t| t.0.as_str()).collect();
    for want in [
        "conduit",
        "signals",
        "vmm-spawner",
        "api-accept",
        "api-worker0",
        "vm",
        "vcpu0",
    ] {
        assert!(names.contains(&want), "{want} missing from {threads:?}");
    }
    for (name, mode, filters) in &threads {
        if name.starts_with("kvm-") {
            // KVM's own workers (kvm-nx-lpage-recovery): kernel tasks that copy the
            // filters of the thread whose ioctl created them and run no user code.
            continue;
        }
        // vCPU threads add theirs to the inherited vmm filter; every other thread has one.
        let want = if name.starts_with("vcpu") { 2 } else { 1 };
        assert_eq!((*mode, *filters), (2, want), "{name} in {threads:?}");
    }
    for (_, mode, filters) in serve_threads("off") {
        assert_eq!((mode, filters), (0, 0));
    }
}
