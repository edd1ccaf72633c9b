//! The API end to end through the `conduit` binary on this machine's /dev/kvm:
//! `conduit serve` driven by `conduit ctl` with real-mode payload VMs (create, boot, info,
//! graceful and forced shutdown, reboot, delete, a second VM, vmm.shutdown), the socket's
//! rules, signals, and `conduit run --config ... --api-socket`; then a bounded load test
//! (concurrent vm.info and bad requests) that checks the server stays responsive.

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{read, wait_until, Asm, TempDir};
use serde_json::{json, Value};

const LIMIT: Duration = Duration::from_secs(20);

fn conduit() -> Command {
    Command::new(env!("CARGO_BIN_EXE_conduit"))
}

/// A `conduit serve` child, killed on drop if still running.
struct Serve {
    child: Child,
    socket: PathBuf,
}

impl Serve {
    fn start(socket: &Path) -> Serve {
        let child = conduit()
            .args(["serve", "--api-socket"])
            .arg(socket)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start conduit serve");
        wait_until("the API socket", LIMIT, || {
            UnixStream::connect(socket).is_ok()
        });
        Serve {
            child,
            socket: socket.to_path_buf(),
        }
    }

    fn ctl(&self, args: &[&str]) -> Output {
        conduit()
            .arg("ctl")
            .arg("--api-socket")
            .arg(&self.socket)
            .args(args)
            .output()
            .expect("run conduit ctl")
    }

    /// `ctl ARGS` must succeed; its stdout as JSON (null when empty).
    fn ok(&self, args: &[&str]) -> Value {
        let out = self.ctl(args);
        assert!(
            out.status.success(),
            "ctl {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if out.stdout.is_empty() {
            Value::Null
        } else {
            serde_json::from_slice(&out.stdout).expect("ctl prints JSON")
        }
    }

    /// `ctl ARGS` must fail; its stderr.
    fn fails(&self, args: &[&str]) -> String {
        let out = self.ctl(args);
        assert_eq!(
            out.status.code(),
            Some(1),
            "ctl {args:?} should fail: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    fn wait_exit(mut self) -> (Option<i32>, String) {
        let t = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                if let Some(mut e) = self.child.stderr.take() {
                    let _ = e.read_to_string(&mut err);
                }
                return (status.code(), err);
            }
            assert!(t.elapsed() < LIMIT, "conduit serve did not exit");
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn vm_json(dir: &TempDir, name: &str, code: &Asm, extra: Value) -> (PathBuf, PathBuf) {
    let log = dir.path().join(format!("{name}.log"));
    let mut c = json!({
        "payload": {"path": dir.payload(name, code)},
        "memory": "64M",
        "serial": {"file": log},
    });
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    let file = dir.path().join(format!("{name}.json"));
    std::fs::write(&file, c.to_string()).unwrap();
    (file, log)
}

#[test]
fn serve_and_ctl_drive_vms_through_their_lives() {
    let dir = TempDir::new("serve");
    let socket = dir.path().join("api.sock");
    let serve = Serve::start(&socket);
    let mode = std::fs::metadata(&socket).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    let ping = serve.ok(&["ping"]);
    assert_eq!(ping["version"], env!("CARGO_PKG_VERSION"));
    assert!(serve.fails(&["info"]).contains("no VM"));
    assert!(serve.fails(&["boot"]).contains("HTTP 409"));

    // Invalid configurations are refused naming the field; nothing is created.
    let bad = dir.path().join("bad.json");
    std::fs::write(&bad, r#"{"payload": {"path": "/x"}, "memory": "12X"}"#).unwrap();
    let e = serve.fails(&["create", bad.to_str().unwrap()]);
    assert!(
        e.contains(r#"memory: "12X" is not a size"#) && e.contains("HTTP 400"),
        "{e}"
    );
    std::fs::write(&bad, r#"{"payload": {"path": "/x"}, "cpu": 2}"#).unwrap();
    assert!(serve
        .fails(&["create", bad.to_str().unwrap()])
        .contains("unknown field `cpu`"));

    let code = Asm::default()
        .print("up\n")
        .wait_power_button()
        .print("bye\n")
        .acpi_poweroff();
    let (file, log) = vm_json(&dir, "button", &code, json!({"cpus": 2}));
    assert_eq!(serve.ok(&["create", file.to_str().unwrap()]), Value::Null);
    assert!(serve
        .fails(&["create", file.to_str().unwrap()])
        .contains("exists already"));
    assert_eq!(serve.ok(&["info"])["state"], "created");
    serve.ok(&["boot"]);
    assert!(serve.fails(&["boot"]).contains("running"));
    assert!(serve.fails(&["delete"]).contains("running"));
    let info = serve.ok(&["info"]);
    assert_eq!(info["state"], "running");
    assert_eq!(info["vcpus"]["running"], 2);
    assert_eq!(info["config"]["memory"], 64u64 << 20);
    assert_eq!(info["boot"]["boots"], 1);
    wait_until("the guest", LIMIT, || read(&log) == "up\n");
    let down = serve.ok(&["shutdown", "--timeout", "15"]);
    assert_eq!(down["outcome"]["reason"], "power-off");
    assert_eq!(read(&log), "up\nbye\n");
    assert_eq!(serve.ok(&["info"])["stopped"]["reason"], "power-off");
    assert!(serve.fails(&["shutdown"]).contains("shut down"));

    // Delete, then a second VM: it ignores the button, so the shutdown forces it off.
    serve.ok(&["delete"]);
    assert!(serve.fails(&["info"]).contains("no VM"));
    let (file, log) = vm_json(
        &dir,
        "deaf",
        &Asm::default().print("b\n").hlt_loop(),
        json!({}),
    );
    serve.ok(&["create", file.to_str().unwrap()]);
    serve.ok(&["boot"]);
    wait_until("the second guest", LIMIT, || read(&log) == "b\n");
    serve.ok(&["reboot"]);
    assert_eq!(serve.ok(&["info"])["boot"]["boots"], 2);
    wait_until("the rebooted guest", LIMIT, || read(&log) == "b\nb\n");
    let t = Instant::now();
    let down = serve.ok(&["shutdown", "--timeout", "1"]);
    assert_eq!(down["outcome"]["reason"], "forced-off");
    assert!(t.elapsed() < Duration::from_secs(8), "{:?}", t.elapsed());

    // The host inventory answers (whatever this host has).
    assert!(serve.ok(&["host", "--all"]).is_array());

    // A third VM left running: vmm.shutdown stops it and the server.
    serve.ok(&["delete"]);
    serve.ok(&["create", file.to_str().unwrap()]);
    serve.ok(&["boot"]);
    serve.ok(&["shutdown-vmm"]);
    let (code, err) = serve.wait_exit();
    assert_eq!(code, Some(0), "{err}");
    assert!(!socket.exists(), "the socket is removed");
}

#[test]
fn a_live_socket_is_refused_and_signals_stop_serve() {
    let dir = TempDir::new("serve-live");
    let socket = dir.path().join("api.sock");
    let serve = Serve::start(&socket);
    let out = conduit()
        .args(["serve", "--api-socket"])
        .arg(&socket)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is in use"), "{err}");
    serve.ok(&["ping"]);
    // SIGTERM with a VM running: the VM is stopped, the server exits 128+15.
    let (file, _) = vm_json(&dir, "sig", &Asm::default().hlt_loop(), json!({}));
    serve.ok(&["create", file.to_str().unwrap()]);
    serve.ok(&["boot"]);
    // SAFETY: sending a signal to our own child process.
    unsafe { libc::kill(serve.child.id() as i32, libc::SIGTERM) };
    let (code, err) = serve.wait_exit();
    assert_eq!(code, Some(143), "{err}");
    assert!(!socket.exists());
    // A stale socket (left by a killed server) is replaced.
    drop(std::os::unix::net::UnixListener::bind(&socket).unwrap());
    let serve = Serve::start(&socket);
    serve.ok(&["ping"]);
}

#[test]
fn run_with_config_file_and_api_socket() {
    let dir = TempDir::new("run-api");
    let socket = dir.path().join("api.sock");
    let (file, log) = vm_json(
        &dir,
        "run",
        &Asm::default().print("up\n").hlt_loop(),
        json!({}),
    );
    let child = conduit()
        .args(["run", "--config"])
        .arg(&file)
        .arg("--api-socket")
        .arg(&socket)
        .stdin(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let serve = Serve {
        child,
        socket: socket.clone(),
    };
    wait_until("the API socket", LIMIT, || {
        UnixStream::connect(&socket).is_ok()
    });
    wait_until("the guest", LIMIT, || read(&log) == "up\n");
    let info = serve.ok(&["info"]);
    assert_eq!(info["state"], "running");
    assert_eq!(
        info["config"]["payload"]["path"],
        json!(file.with_extension("bin"))
    );
    assert!(serve
        .fails(&["create", file.to_str().unwrap()])
        .contains("exists already"));
    let down = serve.ok(&["shutdown", "--timeout", "0"]);
    assert_eq!(down["outcome"]["reason"], "forced-off");
    // `run` exits when its VM stops: 4 for a forced stop.
    let (code, err) = serve.wait_exit();
    assert_eq!(code, Some(4), "{err}");
    assert!(!socket.exists());

    // --config with a bad file names the file and the field; with a flag it is refused.
    std::fs::write(&file, r#"{"payload": {"path": "/x"}, "cpus": 999}"#).unwrap();
    let out = conduit()
        .args(["run", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("cpus: must be 1..=254"), "{err}");
    let out = conduit()
        .args(["run", "--cpus", "2", "--config"])
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "clap refuses --config with --cpus"
    );
    // Flags are checked the same way, named as flags.
    let out = conduit()
        .args(["run", "--kernel", "/nonexistent", "--memory", "1M"])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--memory:"), "{err}");
}

/// Sends `bytes` and reads the answer's status (None: no HTTP answer).
fn exchange(socket: &Path, bytes: &[u8]) -> Option<u16> {
    let mut s = UnixStream::connect(socket).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(15))).ok()?;
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    vmm::api::http::parse_response(&out).map(|r| r.status)
}

#[test]
fn load_storm_of_info_and_bad_requests_leaves_the_server_responsive() {
    let dir = TempDir::new("load");
    let socket = dir.path().join("api.sock");
    let serve = Serve::start(&socket);
    let (file, _) = vm_json(&dir, "idle", &Asm::default().hlt_loop(), json!({"cpus": 2}));
    serve.ok(&["create", file.to_str().unwrap()]);
    serve.ok(&["boot"]);

    let mut big = format!(
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        200 * 1024
    )
    .into_bytes();
    big.extend(std::iter::repeat_n(b'x', 200 * 1024));
    let requests: Arc<Vec<(Vec<u8>, u16)>> = Arc::new(vec![
        (b"GET /api/v1/vm.info HTTP/1.1\r\n\r\n".to_vec(), 200),
        (b"GET /api/v1/vm.info HTTP/1.1\r\n\r\n".to_vec(), 200),
        (b"\x16\x03\x01garbage\r\n\r\n".to_vec(), 400),
        (
            b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 3\r\n\r\n{{{".to_vec(),
            400,
        ),
        (
            b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 2\r\n\r\n{}".to_vec(),
            400,
        ),
        (
            b"PUT /api/v1/vm.boot HTTP/1.1\r\nContent-Length: 0\r\n\r\n".to_vec(),
            409,
        ),
        (b"GET /api/v1/nothing HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"POST /api/v1/vm.info HTTP/1.1\r\n\r\n".to_vec(), 405),
        (big, 413),
    ]);
    let answered = Arc::new(AtomicU64::new(0));
    let storm = Duration::from_secs(2);
    let start = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|t| {
            let (requests, answered, socket) = (requests.clone(), answered.clone(), socket.clone());
            std::thread::spawn(move || {
                let mut wrong = Vec::new();
                let mut i = t;
                // Bounded in time and in count.
                while start.elapsed() < storm && i < 20_000 {
                    let (bytes, want) = &requests[i % requests.len()];
                    match exchange(&socket, bytes) {
                        Some(s) if s == *want || s == 503 => {
                            answered.fetch_add(1, Ordering::Relaxed);
                        }
                        got => wrong.push((i % requests.len(), got)),
                    }
                    // Now and then, a client that connects and goes away mid-request.
                    if i % 7 == 0 {
                        if let Ok(mut s) = UnixStream::connect(&socket) {
                            let _ = s.write_all(b"GET /api/v1/vm.in");
                        }
                    }
                    i += 4;
                }
                wrong
            })
        })
        .collect();
    let wrong: Vec<_> = threads
        .into_iter()
        .flat_map(|t| t.join().unwrap())
        .collect();
    assert!(wrong.is_empty(), "unanswered or wrong answers: {wrong:?}");
    let n = answered.load(Ordering::Relaxed);
    assert!(n >= 40, "only {n} requests answered in {storm:?}");
    // Right after the storm the server answers promptly and the VM is still fine.
    let t = Instant::now();
    assert_eq!(
        exchange(&socket, b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n"),
        Some(200)
    );
    assert!(
        t.elapsed() < Duration::from_secs(3),
        "ping took {:?}",
        t.elapsed()
    );
    assert_eq!(serve.ok(&["info"])["state"], "running");
    eprintln!("load: {n} requests answered in {:?}", start.elapsed());
    serve.ok(&["shutdown-vmm"]);
    let (code, err) = serve.wait_exit();
    assert_eq!(code, Some(0), "{err}");
}
