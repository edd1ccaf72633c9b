//! API tests without KVM: every route and error path through [`handlers::handle`] with a
//! fake backend, the real [`VmBackend`] up to the point where it would need KVM, and the
//! server on a socket in a temporary directory (permissions, live/stale sockets, limits,
//! slow clients, `vmm.shutdown`).

use std::io::{Read, Write};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::handlers::{self, ApiError, Backend, HostQuery};
use super::http::{self, Request, MAX_BODY};
use super::server::{self, Server, ServerError};
use super::VmBackend;
use crate::config::VmConfig;
use crate::event_loop::Outcome;
use crate::vm::{BarInfo, DeviceInfo, MemoryInfo, VcpuInfo, VmInfo, VmState};

/// A backend with the real one's state rules and no VM behind it.
#[derive(Default)]
pub(crate) struct FakeBackend {
    vm: Mutex<Option<(VmConfig, VmState)>>,
    vmm_shutdowns: AtomicUsize,
    last_timeout: Mutex<Option<Duration>>,
}

fn conflict(what: &str, state: Option<VmState>) -> ApiError {
    match state {
        Some(s) => ApiError::conflict(format!("cannot {what}: the VM is {s}")),
        None => ApiError::conflict("no VM: create one with PUT /api/v1/vm.create"),
    }
}

pub(crate) fn fake_info(config: VmConfig, state: VmState) -> VmInfo {
    VmInfo {
        state,
        memory: MemoryInfo {
            bytes: config.memory_bytes,
            hugepages: config.hugepages,
            regions: vec![crate::vm::RamRegion {
                guest_address: 0,
                size: config.memory_bytes,
            }],
        },
        vcpus: VcpuInfo {
            count: config.cpus,
            running: config.cpus,
        },
        devices: config
            .devices
            .iter()
            .enumerate()
            .map(|(i, d)| DeviceInfo {
                host_address: d.address.clone(),
                guest_address: format!("0000:00:{:02x}.0", i + 1),
                iommu_group: Some(7),
                bars: vec![BarInfo {
                    index: 0,
                    kind: "mem64",
                    prefetchable: true,
                    guest_address: 0x80_0000_0000,
                    size: 1 << 24,
                }],
                msix_vectors_armed: vec![0, 1],
                p2p: d.p2p,
                p2p_dma: if d.p2p {
                    vec![crate::vm::DmaRangeInfo {
                        bar: 0,
                        iova: 0x80_0000_0000,
                        size: 1 << 24,
                    }]
                } else {
                    Vec::new()
                },
            })
            .collect(),
        boot: Some(crate::vm::BootInfo {
            started_at_unix_ms: 1,
            build_ms: 2,
            uptime_ms: 3,
            boots: 1,
        }),
        stopped: (state == VmState::Shutdown)
            .then_some(crate::vm::StopInfo::Outcome(Outcome::PowerOff)),
        config,
    }
}

impl Backend for FakeBackend {
    fn create(&self, config: VmConfig) -> Result<(), ApiError> {
        let mut vm = self.vm.lock().unwrap();
        if let Some((_, s)) = &*vm {
            return Err(conflict("create", Some(*s)));
        }
        *vm = Some((config, VmState::Created));
        Ok(())
    }

    fn boot(&self) -> Result<(), ApiError> {
        let mut vm = self.vm.lock().unwrap();
        match &mut *vm {
            Some((_, s @ (VmState::Created | VmState::Shutdown))) => {
                *s = VmState::Running;
                Ok(())
            }
            other => Err(conflict("boot", other.as_ref().map(|v| v.1))),
        }
    }

    fn info(&self) -> Result<VmInfo, ApiError> {
        let vm = self.vm.lock().unwrap();
        match &*vm {
            Some((c, s)) => Ok(fake_info(c.clone(), *s)),
            None => Err(conflict("info", None)),
        }
    }

    fn shutdown(&self, timeout: Duration) -> Result<Outcome, ApiError> {
        *self.last_timeout.lock().unwrap() = Some(timeout);
        let mut vm = self.vm.lock().unwrap();
        match &mut *vm {
            Some((_, s @ VmState::Running)) => {
                *s = VmState::Shutdown;
                Ok(if timeout.is_zero() {
                    Outcome::ForcedOff
                } else {
                    Outcome::PowerOff
                })
            }
            other => Err(conflict("shut down", other.as_ref().map(|v| v.1))),
        }
    }

    fn reboot(&self) -> Result<(), ApiError> {
        match &*self.vm.lock().unwrap() {
            Some((_, VmState::Running)) => Ok(()),
            other => Err(conflict("reboot", other.as_ref().map(|v| v.1))),
        }
    }

    fn delete(&self) -> Result<(), ApiError> {
        let mut vm = self.vm.lock().unwrap();
        match &*vm {
            Some((_, VmState::Created | VmState::Shutdown)) => {
                *vm = None;
                Ok(())
            }
            other => Err(conflict("delete", other.as_ref().map(|v| v.1))),
        }
    }

    fn shutdown_vmm(&self) {
        self.vmm_shutdowns.fetch_add(1, Ordering::SeqCst);
        if let Some((_, s)) = &mut *self.vm.lock().unwrap() {
            *s = VmState::Shutdown;
        }
    }

    fn host(&self, query: &HostQuery) -> Result<Value, ApiError> {
        if query.id.as_deref() == Some("bad") {
            return Err(ApiError::bad_request("invalid query", "bad id"));
        }
        let device = |address: &str| {
            json!({
                "address": address, "id": "10de:2335", "name": "H200", "class": "0x030200",
                "class_name": "3D controller", "driver": "vfio-pci", "driver_override": null,
                "iommu_group": 5, "iommu_group_members": [address], "numa_node": 0,
                "bars": [{"index": 0, "size": 16777216, "kind": "mem32", "prefetchable": false}],
                "host_use": [], "ready": true, "not_ready_because": []
            })
        };
        let mut list = vec![device("0000:17:00.0")];
        if query.all_classes {
            list.push(device("0000:18:00.0"));
        }
        Ok(Value::Array(list))
    }
}

fn req(method: &str, path: &str, body: &str) -> Request {
    let (path, query) = match path.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (path.to_string(), String::new()),
    };
    Request {
        method: method.into(),
        path,
        query,
        body: body.as_bytes().to_vec(),
    }
}

/// Status and parsed body of one handled request.
fn call(b: &dyn Backend, method: &str, path: &str, body: &str) -> (u16, Value) {
    let r = handlers::handle(b, &req(method, path, body)).response;
    let v = r
        .body
        .as_deref()
        .map(|t| serde_json::from_str(t).expect("JSON body"))
        .unwrap_or(Value::Null);
    (r.status, v)
}

fn assert_error(got: (u16, Value), status: u16, needle: &str) {
    let (s, v) = got;
    assert_eq!(s, status, "{v}");
    let obj = v.as_object().expect("error object");
    assert_eq!(
        obj.keys().collect::<Vec<_>>(),
        ["detail", "error"],
        "errors have exactly error and detail: {v}"
    );
    let text = format!("{} {}", v["error"], v["detail"]);
    assert!(text.contains(needle), "{text:?} lacks {needle:?}");
}

const GOOD: &str = r#"{"kernel": {"path": "/k"}, "cpus": 2, "memory": "1G",
    "devices": [{"address": "0000:00:02.0"}]}"#;

#[test]
fn lifecycle_through_every_route() {
    let b = FakeBackend::default();
    let (s, v) = call(&b, "GET", "/api/v1/vmm.ping", "");
    assert_eq!(s, 200);
    assert_eq!(v["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(v["api"], "v1");
    assert_eq!(call(&b, "PUT", "/api/v1/vm.create", GOOD).0, 204);
    let (s, v) = call(&b, "GET", "/api/v1/vm.info", "");
    assert_eq!(s, 200);
    assert_eq!(v["state"], "created");
    assert_eq!(v["config"]["cpus"], 2);
    assert_eq!(v["config"]["memory"], 1u64 << 30);
    assert_eq!(call(&b, "PUT", "/api/v1/vm.boot", "").0, 204);
    let (_, v) = call(&b, "GET", "/api/v1/vm.info", "");
    assert_eq!(v["state"], "running");
    assert_eq!(v["devices"][0]["host_address"], "0000:00:02.0");
    assert_eq!(v["devices"][0]["msix_vectors_armed"], json!([0, 1]));
    assert_eq!(call(&b, "PUT", "/api/v1/vm.reboot", "").0, 204);
    let (s, v) = call(&b, "PUT", "/api/v1/vm.shutdown", r#"{"timeout_secs": 7}"#);
    assert_eq!(s, 200);
    assert_eq!(v["outcome"]["reason"], "power-off");
    assert_eq!(
        *b.last_timeout.lock().unwrap(),
        Some(Duration::from_secs(7))
    );
    let (_, v) = call(&b, "GET", "/api/v1/vm.info", "");
    assert_eq!(v["state"], "shutdown");
    assert_eq!(v["stopped"]["reason"], "power-off");
    // A stopped VM boots again, then shuts down with the default timeout.
    assert_eq!(call(&b, "PUT", "/api/v1/vm.boot", "").0, 204);
    assert_eq!(call(&b, "PUT", "/api/v1/vm.shutdown", "").0, 200);
    assert_eq!(
        *b.last_timeout.lock().unwrap(),
        Some(Duration::from_secs(handlers::DEFAULT_SHUTDOWN_TIMEOUT_SECS))
    );
    assert_eq!(call(&b, "PUT", "/api/v1/vm.delete", "").0, 204);
    assert_error(call(&b, "GET", "/api/v1/vm.info", ""), 409, "no VM");
    let (s, v) = call(&b, "GET", "/api/v1/host?class=all", "");
    assert_eq!(s, 200);
    assert_eq!(v.as_array().unwrap().len(), 2);
    let (_, v) = call(&b, "GET", "/api/v1/host?class=gpu", "");
    assert_eq!(v.as_array().unwrap().len(), 1);
    let r = handlers::handle(&b, &req("PUT", "/api/v1/vmm.shutdown", ""));
    assert_eq!(r.response.status, 204);
    assert!(r.stop_server);
    assert_eq!(b.vmm_shutdowns.load(Ordering::SeqCst), 1);
}

#[test]
fn invalid_configs_are_400_naming_the_field() {
    let b = FakeBackend::default();
    assert_error(
        call(&b, "PUT", "/api/v1/vm.create", "{"),
        400,
        "malformed JSON",
    );
    assert_error(
        call(&b, "PUT", "/api/v1/vm.create", ""),
        400,
        "malformed JSON",
    );
    assert_error(
        call(
            &b,
            "PUT",
            "/api/v1/vm.create",
            r#"{"kernel": {"path": "/k"}, "gpu": true}"#,
        ),
        400,
        "unknown field `gpu`",
    );
    assert_error(
        call(
            &b,
            "PUT",
            "/api/v1/vm.create",
            r#"{"kernel": {"path": "/k"}, "memory": "12X"}"#,
        ),
        400,
        r#"memory: \"12X\" is not a size"#,
    );
    assert_error(
        call(
            &b,
            "PUT",
            "/api/v1/vm.create",
            r#"{"kernel": {"path": "/k"}, "cpus": 0}"#,
        ),
        400,
        "cpus: must be 1..=254",
    );
    assert_error(
        call(
            &b,
            "PUT",
            "/api/v1/vm.create",
            r#"{"kernel": {"path": "/k"}, "devices": [{"address": "zz"}]}"#,
        ),
        400,
        "devices[0].address",
    );
    let r = handlers::handle(
        &b,
        &Request {
            body: vec![0xff, 0xfe],
            ..req("PUT", "/api/v1/vm.create", "")
        },
    );
    assert_eq!(r.response.status, 400);
    // Nothing was created by any of them.
    assert_error(call(&b, "GET", "/api/v1/vm.info", ""), 409, "no VM");
}

#[test]
fn wrong_states_are_409() {
    let b = FakeBackend::default();
    assert_error(call(&b, "PUT", "/api/v1/vm.boot", ""), 409, "no VM");
    assert_error(call(&b, "PUT", "/api/v1/vm.shutdown", ""), 409, "no VM");
    assert_error(call(&b, "PUT", "/api/v1/vm.reboot", ""), 409, "no VM");
    assert_error(call(&b, "PUT", "/api/v1/vm.delete", ""), 409, "no VM");
    assert_eq!(call(&b, "PUT", "/api/v1/vm.create", GOOD).0, 204);
    assert_error(call(&b, "PUT", "/api/v1/vm.create", GOOD), 409, "created");
    assert_error(call(&b, "PUT", "/api/v1/vm.shutdown", ""), 409, "created");
    assert_error(call(&b, "PUT", "/api/v1/vm.reboot", ""), 409, "created");
    assert_eq!(call(&b, "PUT", "/api/v1/vm.boot", "").0, 204);
    assert_error(call(&b, "PUT", "/api/v1/vm.boot", ""), 409, "running");
    assert_error(call(&b, "PUT", "/api/v1/vm.delete", ""), 409, "running");
    assert_error(call(&b, "PUT", "/api/v1/vm.create", GOOD), 409, "running");
}

#[test]
fn unknown_routes_404_wrong_methods_405() {
    let b = FakeBackend::default();
    assert_error(
        call(&b, "GET", "/api/v1/vm.explode", ""),
        404,
        "unknown route",
    );
    assert_error(call(&b, "GET", "/", ""), 404, "unknown route");
    assert_error(call(&b, "GET", "/api/v2/vm.info", ""), 404, "unknown route");
    for (m, p, allowed) in [
        ("GET", "/api/v1/vm.create", "PUT"),
        ("POST", "/api/v1/vm.boot", "PUT"),
        ("PUT", "/api/v1/vm.info", "GET"),
        ("DELETE", "/api/v1/vm.delete", "PUT"),
        ("PUT", "/api/v1/vmm.ping", "GET"),
        ("GET", "/api/v1/vmm.shutdown", "PUT"),
        ("PUT", "/api/v1/host", "GET"),
    ] {
        let r = handlers::handle(&b, &req(m, p, "")).response;
        assert_eq!(r.status, 405, "{m} {p}");
        assert_eq!(r.allow.as_deref(), Some(allowed), "{m} {p}");
    }
    assert_eq!(b.vmm_shutdowns.load(Ordering::SeqCst), 0);
}

#[test]
fn bad_shutdown_and_host_requests_are_400() {
    let b = FakeBackend::default();
    call(&b, "PUT", "/api/v1/vm.create", GOOD);
    call(&b, "PUT", "/api/v1/vm.boot", "");
    assert_error(
        call(&b, "PUT", "/api/v1/vm.shutdown", r#"{"timeout": 5}"#),
        400,
        "unknown field `timeout`",
    );
    assert_error(
        call(&b, "PUT", "/api/v1/vm.shutdown", r#"{"timeout_secs": -1}"#),
        400,
        "timeout_secs",
    );
    assert_error(
        call(
            &b,
            "PUT",
            "/api/v1/vm.shutdown",
            r#"{"timeout_secs": 99999}"#,
        ),
        400,
        "timeout_secs: must be 0..=3600",
    );
    assert_error(
        call(&b, "PUT", "/api/v1/vm.shutdown", "{"),
        400,
        "invalid shutdown",
    );
    // Still running: none of those shut it down.
    assert_eq!(b.info().unwrap().state, VmState::Running);
    let (s, v) = call(&b, "PUT", "/api/v1/vm.shutdown", r#"{"timeout_secs": 0}"#);
    assert_eq!((s, &v["outcome"]["reason"]), (200, &json!("forced-off")));
    assert_error(
        call(&b, "GET", "/api/v1/host?class=nic", ""),
        400,
        "class=nic",
    );
    assert_error(call(&b, "GET", "/api/v1/host?id=bad", ""), 400, "bad id");
}

#[test]
fn real_backend_checks_config_and_state_without_kvm() {
    let dir = TempDir::new("backend");
    let kernel = dir.path().join("bzImage");
    std::fs::write(&kernel, b"not really a kernel").unwrap();
    let b = VmBackend::new();
    assert_error(call(&b, "GET", "/api/v1/vm.info", ""), 409, "no VM");
    assert_error(call(&b, "PUT", "/api/v1/vm.boot", ""), 409, "no VM");
    let missing = r#"{"kernel": {"path": "/nonexistent/conduit-kernel"}}"#;
    assert_error(
        call(&b, "PUT", "/api/v1/vm.create", missing),
        400,
        "kernel.path: /nonexistent/conduit-kernel",
    );
    let good = json!({"kernel": {"path": kernel}, "serial": "off"}).to_string();
    assert_eq!(call(&b, "PUT", "/api/v1/vm.create", &good).0, 204);
    assert_error(
        call(&b, "PUT", "/api/v1/vm.create", &good),
        409,
        "exists already",
    );
    let (s, v) = call(&b, "GET", "/api/v1/vm.info", "");
    assert_eq!(s, 200);
    assert_eq!(v["state"], "created");
    assert_eq!(v["devices"], json!([]));
    assert_eq!(v["boot"], Value::Null);
    assert_error(call(&b, "PUT", "/api/v1/vm.shutdown", ""), 409, "created");
    assert_error(call(&b, "PUT", "/api/v1/vm.reboot", ""), 409, "created");
    assert_eq!(call(&b, "PUT", "/api/v1/vm.delete", "").0, 204);
    assert_error(call(&b, "PUT", "/api/v1/vm.delete", ""), 409, "no VM");
    // The host route reads a host tree: an empty one lists nothing.
    let b = VmBackend::new().with_host_root(crate::host::HostRoot::at(dir.path()));
    let (s, v) = call(&b, "GET", "/api/v1/host", "");
    assert_eq!((s, v), (200, json!([])));
    assert_error(call(&b, "GET", "/api/v1/host?id=xyz", ""), 400, "xyz");
}

/// A temporary directory removed on drop.
pub(crate) struct TempDir(PathBuf);

impl TempDir {
    pub(crate) fn new(tag: &str) -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let p = std::env::temp_dir().join(format!(
            "conduit-api-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::SeqCst)
        ));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        TempDir(p)
    }

    pub(crate) fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Sends raw bytes, returns the raw answer.
fn raw(socket: &Path, bytes: &[u8]) -> Vec<u8> {
    let mut s = UnixStream::connect(socket).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    let _ = s.write_all(bytes);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

fn status_of(answer: &[u8]) -> u16 {
    http::parse_response(answer)
        .unwrap_or_else(|| panic!("not HTTP: {:?}", String::from_utf8_lossy(answer)))
        .status
}

/// The server threads in these tests run under the built-in `api` filter, as in conduit.
fn api_filters() -> Arc<crate::seccomp::SeccompFilters> {
    crate::seccomp::SeccompFilters::builtin(crate::seccomp::SeccompMode::On).unwrap()
}

fn start(dir: &TempDir, backend: Arc<dyn Backend>) -> (Server, PathBuf, Arc<AtomicBool>) {
    let path = dir.path().join("api.sock");
    let stopped = Arc::new(AtomicBool::new(false));
    let flag = stopped.clone();
    let server = Server::start(
        &path,
        backend,
        Box::new(move || flag.store(true, Ordering::SeqCst)),
        &api_filters(),
    )
    .unwrap();
    (server, path, stopped)
}

#[test]
fn server_socket_is_0600_and_removed_on_stop() {
    let dir = TempDir::new("perm");
    let (server, path, _) = start(&dir, Arc::new(FakeBackend::default()));
    let mode = std::fs::metadata(&path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "mode {mode:o}");
    // Nothing else is left beside it (the private bind directory is gone).
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, ["api.sock"]);
    server.stop();
    assert!(!path.exists());
}

#[test]
fn live_socket_is_refused_stale_replaced_other_files_kept() {
    let dir = TempDir::new("live");
    let (server, path, _) = start(&dir, Arc::new(FakeBackend::default()));
    match Server::start(
        &path,
        Arc::new(FakeBackend::default()),
        Box::new(|| {}),
        &api_filters(),
    ) {
        Err(ServerError::Live(p)) => assert_eq!(p, path),
        Err(e) => panic!("{e}"),
        Ok(_) => panic!("a second server took a live socket"),
    }
    // The first one still serves.
    assert_eq!(
        status_of(&raw(&path, b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n")),
        200
    );
    server.stop();
    // A stale socket (bound, nobody listening) is replaced.
    let stale = std::os::unix::net::UnixListener::bind(&path).unwrap();
    drop(stale);
    assert!(path.exists());
    let (server, _, _) = start(&dir, Arc::new(FakeBackend::default()));
    assert_eq!(
        status_of(&raw(&path, b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n")),
        200
    );
    server.stop();
    // A regular file is not a socket: left alone.
    std::fs::write(&path, b"precious").unwrap();
    assert!(matches!(
        server::bind_socket(&path),
        Err(ServerError::NotSocket(_))
    ));
    assert_eq!(std::fs::read(&path).unwrap(), b"precious");
}

#[test]
fn server_survives_bad_input_and_answers_with_json_errors() {
    let dir = TempDir::new("bad");
    let (server, path, stopped) = start(&dir, Arc::new(FakeBackend::default()));
    let cases: Vec<(Vec<u8>, u16)> = vec![
        (b"garbage\r\n\r\n".to_vec(), 400),
        (b"\x00\x01\x02\xff\r\n\r\n".to_vec(), 400),
        (b"GET /api/v1/nope HTTP/1.1\r\n\r\n".to_vec(), 404),
        (b"DELETE /api/v1/vm.info HTTP/1.1\r\n\r\n".to_vec(), 405),
        (
            b"PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: 5\r\n\r\n{\"a\":".to_vec(),
            400,
        ),
        (
            b"PUT /api/v1/vm.create HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
                .to_vec(),
            411,
        ),
        (
            format!("GET / HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(20000)).into_bytes(),
            431,
        ),
    ];
    for (bytes, want) in &cases {
        let answer = raw(&path, bytes);
        assert_eq!(
            status_of(&answer),
            *want,
            "{:?}",
            String::from_utf8_lossy(bytes)
        );
        let body = http::parse_response(&answer).unwrap().body;
        let v: Value = serde_json::from_slice(&body).unwrap();
        assert!(v["error"].is_string() && v["detail"].is_string(), "{v}");
    }
    // Oversized body, sent in full: 413, and the client gets to read it.
    let mut big = format!(
        "PUT /api/v1/vm.create HTTP/1.1\r\nContent-Length: {}\r\n\r\n",
        4 * MAX_BODY
    )
    .into_bytes();
    big.extend(std::iter::repeat_n(b' ', 4 * MAX_BODY));
    assert_eq!(status_of(&raw(&path, &big)), 413);
    // With Expect: 100-continue the body is never sent.
    assert_eq!(
        status_of(&raw(
            &path,
            format!(
                "PUT /api/v1/vm.create HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n",
                MAX_BODY + 1
            )
            .as_bytes()
        )),
        413
    );
    // Connect and leave without a word: nothing to answer, nothing breaks.
    drop(UnixStream::connect(&path).unwrap());
    // Still alive.
    assert_eq!(
        status_of(&raw(&path, b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n")),
        200
    );
    assert!(!stopped.load(Ordering::SeqCst));
    server.stop();
}

#[test]
fn slow_clients_do_not_block_others() {
    let dir = TempDir::new("slow");
    let (server, path, _) = start(&dir, Arc::new(FakeBackend::default()));
    // Fewer idle connections than workers: the others still answer at once.
    let idle: Vec<UnixStream> = (0..server::WORKERS - 1)
        .map(|_| {
            let mut s = UnixStream::connect(&path).unwrap();
            s.write_all(b"GET /api/v1/vm").unwrap();
            s
        })
        .collect();
    let t = Instant::now();
    assert_eq!(
        status_of(&raw(&path, b"GET /api/v1/vmm.ping HTTP/1.1\r\n\r\n")),
        200
    );
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // A trickling client is cut off with 408 by the request deadline.
    let mut s = idle.into_iter().next().unwrap();
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut out = Vec::new();
    let t = Instant::now();
    let _ = s.read_to_end(&mut out);
    assert_eq!(status_of(&out), 408);
    assert!(t.elapsed() < Duration::from_secs(10), "{:?}", t.elapsed());
    server.stop();
}

#[test]
fn vmm_shutdown_is_answered_then_reported() {
    let dir = TempDir::new("stop");
    let backend = Arc::new(FakeBackend::default());
    let (server, path, stopped) = start(&dir, backend.clone());
    let answer = raw(
        &path,
        b"PUT /api/v1/vmm.shutdown HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    );
    assert_eq!(status_of(&answer), 204);
    let t = Instant::now();
    while !stopped.load(Ordering::SeqCst) {
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "on_shutdown never ran"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    assert_eq!(backend.vmm_shutdowns.load(Ordering::SeqCst), 1);
    server.stop();
    assert!(!path.exists());
}

#[test]
fn ctl_client_talks_to_the_server() {
    let dir = TempDir::new("ctl");
    let (server, path, _) = start(&dir, Arc::new(FakeBackend::default()));
    let wait = Duration::from_secs(10);
    let r = crate::ctl::request(&path, "GET", "/api/v1/vmm.ping", None, wait).unwrap();
    assert_eq!(r.status, 200);
    let r = crate::ctl::request(
        &path,
        "PUT",
        "/api/v1/vm.create",
        Some(GOOD.as_bytes()),
        wait,
    )
    .unwrap();
    assert_eq!(r.status, 204);
    let r = crate::ctl::request(&path, "PUT", "/api/v1/vm.delete", None, wait).unwrap();
    assert_eq!(r.status, 204);
    // An oversized body: the client still reads the 413.
    let big = vec![b' '; 2 * MAX_BODY];
    let r = crate::ctl::request(&path, "PUT", "/api/v1/vm.create", Some(&big), wait).unwrap();
    assert_eq!(r.status, 413);
    server.stop();
    assert!(crate::ctl::request(&path, "GET", "/api/v1/vmm.ping", None, wait).is_err());
}
