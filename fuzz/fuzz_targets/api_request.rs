//! The API's hand-written HTTP: any bytes, arriving in any chunks, through the request
//! reader, the routes (over a backend with the real one's state rules and no VM) and the
//! response writer, whose output the client parser reads back; the client parser also
//! reads the raw bytes as a response. A request is parsed within the limits or refused
//! with a status the API documents; every answer parses back to its status and body.
//!
//! Input: one byte for the VM before the request (0 none, 1 created, 2 running, 3 shut
//! down), one byte N, N bytes of chunk sizes, then what the peer sends.
#![no_main]

use std::io::{Read, Write};
use std::sync::Mutex;
use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use vmm::api::http::{self, ReadOutcome, MAX_BODY, MAX_HEAD};
use vmm::api::{ApiError, Backend, HostQuery};
use vmm::config::VmConfig;
use vmm::event_loop::Outcome;
use vmm::vm::{MemoryInfo, VcpuInfo, VmInfo, VmState};

/// The input, decoded.
struct Input<'a> {
    /// The VM before the request and its state.
    vm: Option<VmState>,
    /// Chunk sizes the peer's bytes arrive in (cycled; 0 = a read interrupted by a
    /// signal, 255 = the socket's read timeout).
    chunks: &'a [u8],
    bytes: &'a [u8],
}

impl<'a> Input<'a> {
    fn decode(data: &'a [u8]) -> Option<Self> {
        let (&vm, rest) = data.split_first()?;
        let (&n, rest) = rest.split_first()?;
        let chunks = rest.get(..usize::from(n))?;
        let vm = match vm % 4 {
            0 => None,
            1 => Some(VmState::Created),
            2 => Some(VmState::Running),
            _ => Some(VmState::Shutdown),
        };
        Some(Self {
            vm,
            chunks,
            bytes: &rest[usize::from(n)..],
        })
    }
}

/// The peer: `bytes` in chunks, the answer collected.
struct Peer<'a> {
    bytes: &'a [u8],
    chunks: &'a [u8],
    next: usize,
    interrupted: bool,
    sent: Vec<u8>,
}

impl Read for Peer<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let chunk = match self.chunks {
            [] => usize::MAX,
            c => usize::from(c[self.next % c.len()]),
        };
        self.next += 1;
        // One interruption at a time: the reader retries those.
        let interrupt = chunk == 0 && !std::mem::replace(&mut self.interrupted, chunk == 0);
        if interrupt {
            return Err(std::io::ErrorKind::Interrupted.into());
        }
        if chunk == 255 {
            return Err(std::io::ErrorKind::WouldBlock.into());
        }
        let n = chunk.max(1).min(buf.len()).min(self.bytes.len());
        buf[..n].copy_from_slice(&self.bytes[..n]);
        self.bytes = &self.bytes[n..];
        Ok(n)
    }
}

impl Write for Peer<'_> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.sent.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// One VM's state rules, no VM.
struct Fake(Mutex<Option<(VmConfig, VmState)>>);

fn conflict(what: &str) -> ApiError {
    ApiError::conflict(format!("cannot {what}"))
}

impl Backend for Fake {
    fn create(&self, config: VmConfig) -> Result<(), ApiError> {
        let mut vm = self.0.lock().unwrap_or_else(|p| p.into_inner());
        if vm.is_some() {
            return Err(conflict("create"));
        }
        *vm = Some((config, VmState::Created));
        Ok(())
    }
    fn boot(&self) -> Result<(), ApiError> {
        match &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((_, s @ (VmState::Created | VmState::Shutdown))) => {
                *s = VmState::Running;
                Ok(())
            }
            _ => Err(conflict("boot")),
        }
    }
    fn info(&self) -> Result<VmInfo, ApiError> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((config, state)) => Ok(VmInfo {
                state: *state,
                memory: MemoryInfo {
                    bytes: config.memory_bytes,
                    hugepages: config.hugepages,
                    regions: Vec::new(),
                },
                vcpus: VcpuInfo {
                    count: config.cpus,
                    running: 0,
                },
                config: config.clone(),
                devices: Vec::new(),
                boot: None,
                stopped: None,
            }),
            None => Err(conflict("info")),
        }
    }
    fn shutdown(&self, timeout: Duration) -> Result<Outcome, ApiError> {
        assert!(
            timeout.as_secs() <= 3600,
            "timeout {timeout:?} past the limit"
        );
        match &mut *self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((_, s @ VmState::Running)) => {
                *s = VmState::Shutdown;
                Ok(Outcome::PowerOff)
            }
            _ => Err(conflict("shut down")),
        }
    }
    fn reboot(&self) -> Result<(), ApiError> {
        match &*self.0.lock().unwrap_or_else(|p| p.into_inner()) {
            Some((_, VmState::Running)) => Ok(()),
            _ => Err(conflict("reboot")),
        }
    }
    fn delete(&self) -> Result<(), ApiError> {
        let mut vm = self.0.lock().unwrap_or_else(|p| p.into_inner());
        match &*vm {
            Some((_, VmState::Created | VmState::Shutdown)) => {
                *vm = None;
                Ok(())
            }
            _ => Err(conflict("delete")),
        }
    }
    fn shutdown_vmm(&self) {}
    fn host(&self, query: &HostQuery) -> Result<serde_json::Value, ApiError> {
        Ok(serde_json::json!({ "all": query.all_classes, "id": query.id }))
    }
}

fn check_answer(response: &http::Response) {
    let mut wire = Vec::new();
    if let Err(e) = http::write_response(&mut wire, response) {
        panic!("writing to a Vec: {e}");
    }
    let parsed = http::parse_response(&wire).unwrap_or_else(|| {
        panic!(
            "own response unparsable: {:?}",
            String::from_utf8_lossy(&wire)
        )
    });
    assert_eq!(parsed.status, response.status);
    assert_eq!(
        parsed.body,
        response.body.clone().unwrap_or_default().into_bytes()
    );
    assert_ne!(
        http::reason(response.status),
        "Unknown",
        "status {}",
        response.status
    );
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = Input::decode(data) else {
        return;
    };
    let _ = http::parse_response(input.bytes);

    let mut peer = Peer {
        bytes: input.bytes,
        chunks: input.chunks,
        next: 0,
        interrupted: false,
        sent: Vec::new(),
    };
    let outcome = http::read_request(&mut peer, None);
    let sent_continue = !peer.sent.is_empty();
    match outcome {
        ReadOutcome::Closed => assert!(input.bytes.is_empty(), "closed with bytes sent"),
        ReadOutcome::Refuse(e) => {
            assert_ne!(
                http::reason(e.status),
                "Unknown",
                "refusal status {}",
                e.status
            );
            assert!(!e.detail.is_empty());
        }
        ReadOutcome::Request(req) => {
            assert!(!req.method.is_empty() && req.method.bytes().all(|b| b.is_ascii_uppercase()));
            assert!(req.path.starts_with('/'), "path {:?}", req.path);
            assert!(req.body.len() <= MAX_BODY);
            assert!(
                input.bytes.len() <= MAX_HEAD + 4 + MAX_BODY,
                "over the limits"
            );
            if sent_continue {
                assert_eq!(peer.sent, b"HTTP/1.1 100 Continue\r\n\r\n");
            }
            let vm = input.vm.map(|s| (VmConfig::linux("/fuzz/vmlinuz"), s));
            let backend = Fake(Mutex::new(vm));
            let reply = vmm::api::handlers::handle(&backend, &req);
            check_answer(&reply.response);
            if reply.response.status == 204 {
                assert!(reply.response.body.is_none());
            }
        }
    }
});
