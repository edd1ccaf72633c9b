//! The API's routes and what each does with a [`Backend`]. The routes are listed in
//! [`ROUTES`], which `resources/openapi.json` documents (a test checks they agree).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::http::{Request, Response};
use crate::config::VmConfig;
use crate::event_loop::Outcome;
use crate::vm::VmInfo;

/// Path prefix of every route.
pub const API_PREFIX: &str = "/api/v1";
/// Default `timeout_secs` of `vm.shutdown`.
pub const DEFAULT_SHUTDOWN_TIMEOUT_SECS: u64 = 30;
/// Largest `timeout_secs` of `vm.shutdown`.
pub const MAX_SHUTDOWN_TIMEOUT_SECS: u64 = 3600;

/// One route: method and full path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Route {
    /// HTTP method.
    pub method: &'static str,
    /// Full path.
    pub path: &'static str,
}

/// Every route the API serves.
pub const ROUTES: &[Route] = &[
    Route {
        method: "PUT",
        path: "/api/v1/vm.create",
    },
    Route {
        method: "PUT",
        path: "/api/v1/vm.boot",
    },
    Route {
        method: "GET",
        path: "/api/v1/vm.info",
    },
    Route {
        method: "PUT",
        path: "/api/v1/vm.shutdown",
    },
    Route {
        method: "PUT",
        path: "/api/v1/vm.reboot",
    },
    Route {
        method: "PUT",
        path: "/api/v1/vm.delete",
    },
    Route {
        method: "GET",
        path: "/api/v1/vmm.ping",
    },
    Route {
        method: "PUT",
        path: "/api/v1/vmm.shutdown",
    },
    Route {
        method: "GET",
        path: "/api/v1/host",
    },
];

/// An error answer: `{"error": ..., "detail": ...}` with an HTTP status.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApiError {
    /// HTTP status (not in the body).
    #[serde(skip)]
    pub status: u16,
    /// Short summary (`invalid VM configuration`, `wrong state`, ...).
    pub error: String,
    /// What exactly went wrong.
    pub detail: String,
}

impl ApiError {
    /// An error with this status.
    pub fn new(status: u16, error: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            status,
            error: error.into(),
            detail: detail.into(),
        }
    }

    /// 400: the request is invalid.
    pub fn bad_request(error: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(400, error, detail)
    }

    /// 409: the request does not fit the VM's state.
    pub fn conflict(detail: impl Into<String>) -> Self {
        Self::new(409, "wrong state", detail)
    }

    /// 500: the request was fine but failed.
    pub fn internal(error: impl Into<String>, detail: impl Into<String>) -> Self {
        Self::new(500, error, detail)
    }

    fn response(&self) -> Response {
        Response {
            status: self.status,
            body: Some(serde_json::to_string(self).unwrap_or_default()),
            allow: None,
        }
    }
}

/// The `GET /api/v1/host` query: as `conduit host list --json [--class all] [--id ID]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HostQuery {
    /// `class=all`: every device, not only display controllers.
    pub all_classes: bool,
    /// `id=VENDOR:DEVICE`.
    pub id: Option<String>,
}

/// What the API drives: the real one holds at most one [`crate::vm::Vm`]
/// ([`super::VmBackend`]); tests use a fake.
pub trait Backend: Send + Sync {
    /// Creates the VM (validated config; files checked). 409 if one exists.
    fn create(&self, config: VmConfig) -> Result<(), ApiError>;
    /// Boots the VM. 409 if none or already running.
    fn boot(&self) -> Result<(), ApiError>;
    /// The VM's info. 409 if none.
    fn info(&self) -> Result<VmInfo, ApiError>;
    /// ACPI shutdown, forced after `timeout`. 409 if not running.
    fn shutdown(&self, timeout: Duration) -> Result<Outcome, ApiError>;
    /// Hard reboot. 409 if not running.
    fn reboot(&self) -> Result<(), ApiError>;
    /// Forgets the VM. 409 if none or running.
    fn delete(&self) -> Result<(), ApiError>;
    /// Stops any running VM: the VMM is about to exit.
    fn shutdown_vmm(&self);
    /// The host's PCI devices as `conduit host list --json` prints them.
    fn host(&self, query: &HostQuery) -> Result<serde_json::Value, ApiError>;
}

/// What the server does after answering.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// The answer.
    pub response: Response,
    /// `vmm.shutdown` was served: stop the server.
    pub stop_server: bool,
}

impl From<Response> for Reply {
    fn from(response: Response) -> Self {
        Self {
            response,
            stop_server: false,
        }
    }
}

/// The body of `vm.shutdown` (optional).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ShutdownRequest {
    /// Seconds to wait for the guest before forcing it off.
    timeout_secs: Option<u64>,
}

/// `vm.shutdown`'s answer.
#[derive(Debug, Serialize)]
struct ShutdownReply {
    /// How the VM stopped.
    outcome: Outcome,
}

/// `vmm.ping`'s answer.
#[derive(Debug, Serialize)]
struct Ping {
    version: &'static str,
    api: &'static str,
    pid: u32,
}

fn json<T: Serialize>(status: u16, v: &T) -> Response {
    match serde_json::to_string(v) {
        Ok(body) => Response {
            status,
            body: Some(body),
            allow: None,
        },
        Err(e) => ApiError::internal("cannot serialise the answer", e.to_string()).response(),
    }
}

fn no_content() -> Response {
    Response {
        status: 204,
        body: None,
        allow: None,
    }
}

fn reply(r: Result<Response, ApiError>) -> Reply {
    r.unwrap_or_else(|e| e.response()).into()
}

fn shutdown_timeout(body: &[u8]) -> Result<Duration, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(Duration::from_secs(DEFAULT_SHUTDOWN_TIMEOUT_SECS));
    }
    let bad = |d: String| ApiError::bad_request("invalid shutdown request", d);
    let mut de = serde_json::Deserializer::from_slice(body);
    let req: ShutdownRequest = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if path == "." {
            bad(inner.to_string())
        } else {
            bad(format!("{path}: {inner}"))
        }
    })?;
    de.end().map_err(|e| bad(e.to_string()))?;
    let secs = req.timeout_secs.unwrap_or(DEFAULT_SHUTDOWN_TIMEOUT_SECS);
    if secs > MAX_SHUTDOWN_TIMEOUT_SECS {
        return Err(bad(format!(
            "timeout_secs: must be 0..={MAX_SHUTDOWN_TIMEOUT_SECS}, got {secs}"
        )));
    }
    Ok(Duration::from_secs(secs))
}

fn host_query(query: &str) -> Result<HostQuery, ApiError> {
    let mut q = HostQuery::default();
    for pair in query.split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("class", "all")) => q.all_classes = true,
            Some(("class", "gpu")) => q.all_classes = false,
            Some(("id", id)) if !id.is_empty() => q.id = Some(id.to_string()),
            _ => {
                return Err(ApiError::bad_request(
                    "invalid query",
                    format!("{pair:?}: expected class=gpu|all or id=VENDOR:DEVICE"),
                ))
            }
        }
    }
    Ok(q)
}

/// Answers one request.
pub fn handle(backend: &dyn Backend, req: &Request) -> Reply {
    let Some(route) = ROUTES
        .iter()
        .find(|r| r.path == req.path && r.method == req.method)
    else {
        let allowed: Vec<&str> = ROUTES
            .iter()
            .filter(|r| r.path == req.path)
            .map(|r| r.method)
            .collect();
        if allowed.is_empty() {
            return ApiError::new(
                404,
                "unknown route",
                format!(
                    "no endpoint {} {} (the routes are under {API_PREFIX}/, see resources/openapi.json)",
                    req.method, req.path
                ),
            )
            .response()
            .into();
        }
        let mut r = ApiError::new(
            405,
            "method not allowed",
            format!(
                "{} takes {}, not {}",
                req.path,
                allowed.join(", "),
                req.method
            ),
        )
        .response();
        r.allow = Some(allowed.join(", "));
        return r.into();
    };
    match route.path.trim_start_matches(API_PREFIX) {
        "/vm.create" => reply((|| {
            let text = std::str::from_utf8(&req.body).map_err(|_| {
                ApiError::bad_request("invalid VM configuration", "the body is not UTF-8")
            })?;
            let config = VmConfig::from_json(text)
                .map_err(|e| ApiError::bad_request("invalid VM configuration", e.to_string()))?;
            backend.create(config)?;
            Ok(no_content())
        })()),
        "/vm.boot" => reply(backend.boot().map(|()| no_content())),
        "/vm.info" => reply(backend.info().map(|i| json(200, &i))),
        "/vm.shutdown" => reply((|| {
            let timeout = shutdown_timeout(&req.body)?;
            let outcome = backend.shutdown(timeout)?;
            Ok(json(200, &ShutdownReply { outcome }))
        })()),
        "/vm.reboot" => reply(backend.reboot().map(|()| no_content())),
        "/vm.delete" => reply(backend.delete().map(|()| no_content())),
        "/vmm.ping" => json(
            200,
            &Ping {
                version: env!("CARGO_PKG_VERSION"),
                api: "v1",
                pid: std::process::id(),
            },
        )
        .into(),
        "/vmm.shutdown" => {
            backend.shutdown_vmm();
            Reply {
                response: no_content(),
                stop_server: true,
            }
        }
        "/host" => {
            reply(host_query(&req.query).and_then(|q| backend.host(&q).map(|v| json(200, &v))))
        }
        other => ApiError::internal("unrouted", format!("route {other} has no handler"))
            .response()
            .into(),
    }
}
