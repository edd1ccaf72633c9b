//! `conduit ctl --api-socket PATH COMMAND`: the API client. Prints the answer's JSON on
//! stdout; on an API error prints `conduit: error: ERROR: DETAIL (HTTP STATUS)` on stderr
//! and exits 1.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Subcommand;

use crate::api::http::{self, ClientResponse};

/// `conduit ctl`.
#[derive(clap::Args, Debug)]
pub struct CtlArgs {
    /// The API socket of a `conduit serve` or `conduit run --api-socket`.
    #[arg(long, value_name = "PATH")]
    pub api_socket: PathBuf,
    /// Seconds to wait for the answer (vm.shutdown waits for the guest).
    #[arg(long, default_value_t = 600)]
    pub wait: u64,
    /// What to ask.
    #[command(subcommand)]
    pub command: CtlCommand,
}

/// `conduit ctl` commands, one per route.
#[derive(Subcommand, Debug, Clone, PartialEq, Eq)]
pub enum CtlCommand {
    /// GET /api/v1/vmm.ping: the VMM's version.
    Ping,
    /// PUT /api/v1/vm.create with the VmConfig in FILE (`-` for stdin).
    Create {
        /// JSON VmConfig (resources/vmconfig.schema.json).
        file: PathBuf,
    },
    /// PUT /api/v1/vm.boot.
    Boot,
    /// GET /api/v1/vm.info.
    Info,
    /// PUT /api/v1/vm.shutdown: ACPI power button, forced off after the timeout.
    Shutdown {
        /// Seconds to wait for the guest before forcing it off (server default: 30).
        #[arg(long)]
        timeout: Option<u64>,
    },
    /// PUT /api/v1/vm.reboot.
    Reboot,
    /// PUT /api/v1/vm.delete.
    Delete,
    /// PUT /api/v1/vmm.shutdown: stop the VM (if any) and the VMM.
    ShutdownVmm,
    /// GET /api/v1/host: the host's PCI devices, as `conduit host list --json`.
    Host {
        /// Every class, not only display controllers.
        #[arg(long)]
        all: bool,
        /// Only devices with this VENDOR:DEVICE id.
        #[arg(long)]
        id: Option<String>,
    },
}

/// Errors of the client itself (not of the API).
#[derive(Debug, thiserror::Error)]
pub enum CtlError {
    /// Cannot reach the server.
    #[error("cannot connect to {path}: {source}")]
    Connect {
        /// The socket.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The exchange failed.
    #[error("talking to {path}: {source}")]
    Io {
        /// The socket.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// The answer is not HTTP.
    #[error("{path} answered something that is not an HTTP response")]
    BadResponse {
        /// The socket.
        path: PathBuf,
    },
    /// The request body cannot be read.
    #[error("cannot read {path}: {source}")]
    Input {
        /// The file.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
}

/// Sends one request and reads the whole answer (the server closes the connection).
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
    wait: Duration,
) -> Result<ClientResponse, CtlError> {
    let io = |source| CtlError::Io {
        path: socket.to_path_buf(),
        source,
    };
    let mut stream = UnixStream::connect(socket).map_err(|source| CtlError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    stream.set_read_timeout(Some(wait)).map_err(io)?;
    stream
        .set_write_timeout(Some(Duration::from_secs(10)))
        .map_err(io)?;
    let body = body.unwrap_or_default();
    let mut req =
        format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\nAccept: application/json\r\n");
    if !body.is_empty() || method == "PUT" {
        req.push_str("Content-Type: application/json\r\n");
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("Connection: close\r\n\r\n");
    let mut raw = req.into_bytes();
    raw.extend_from_slice(body);
    // A server refusing the body (413) may close before reading it all: read its answer
    // anyway.
    let sent = stream.write_all(&raw);
    let mut answer = Vec::new();
    let read = stream.read_to_end(&mut answer);
    if answer.is_empty() {
        sent.map_err(io)?;
        read.map_err(io)?;
    }
    http::parse_response(&answer).ok_or_else(|| CtlError::BadResponse {
        path: socket.to_path_buf(),
    })
}

fn read_input(file: &Path) -> Result<Vec<u8>, CtlError> {
    let input = |source| CtlError::Input {
        path: file.to_path_buf(),
        source,
    };
    if file == Path::new("-") {
        let mut v = Vec::new();
        std::io::stdin().read_to_end(&mut v).map_err(input)?;
        Ok(v)
    } else {
        std::fs::read(file).map_err(input)
    }
}

/// Method, path and body of a command.
pub fn to_request(cmd: &CtlCommand) -> Result<(&'static str, String, Option<Vec<u8>>), CtlError> {
    let v1 = |p: &str| format!("/api/v1/{p}");
    Ok(match cmd {
        CtlCommand::Ping => ("GET", v1("vmm.ping"), None),
        CtlCommand::Create { file } => ("PUT", v1("vm.create"), Some(read_input(file)?)),
        CtlCommand::Boot => ("PUT", v1("vm.boot"), None),
        CtlCommand::Info => ("GET", v1("vm.info"), None),
        CtlCommand::Shutdown { timeout } => (
            "PUT",
            v1("vm.shutdown"),
            timeout.map(|t| format!("{{\"timeout_secs\": {t}}}").into_bytes()),
        ),
        CtlCommand::Reboot => ("PUT", v1("vm.reboot"), None),
        CtlCommand::Delete => ("PUT", v1("vm.delete"), None),
        CtlCommand::ShutdownVmm => ("PUT", v1("vmm.shutdown"), None),
        CtlCommand::Host { all, id } => {
            let mut q = Vec::new();
            if *all {
                q.push("class=all".to_string());
            }
            if let Some(id) = id {
                q.push(format!("id={id}"));
            }
            let path = if q.is_empty() {
                v1("host")
            } else {
                format!("{}?{}", v1("host"), q.join("&"))
            };
            ("GET", path, None)
        }
    })
}

/// Runs `conduit ctl`: 0 on a 2xx answer, 1 otherwise.
pub fn main(args: CtlArgs) -> ExitCode {
    let fail = |msg: String| {
        eprintln!("conduit: error: {msg}");
        ExitCode::from(crate::cli::EXIT_ERROR)
    };
    let (method, path, body) = match to_request(&args.command) {
        Ok(r) => r,
        Err(e) => return fail(e.to_string()),
    };
    let answer = match request(
        &args.api_socket,
        method,
        &path,
        body.as_deref(),
        Duration::from_secs(args.wait),
    ) {
        Ok(a) => a,
        Err(e) => return fail(e.to_string()),
    };
    let value: Option<serde_json::Value> = serde_json::from_slice(&answer.body).ok();
    if (200..300).contains(&answer.status) {
        if let Some(v) = value {
            println!(
                "{}",
                serde_json::to_string_pretty(&v).unwrap_or_else(|_| v.to_string())
            );
        }
        return ExitCode::SUCCESS;
    }
    let text = match &value {
        Some(v) => format!(
            "{}: {} (HTTP {})",
            v["error"].as_str().unwrap_or("error"),
            v["detail"].as_str().unwrap_or(""),
            answer.status
        ),
        None => format!(
            "HTTP {}: {}",
            answer.status,
            String::from_utf8_lossy(&answer.body)
        ),
    };
    fail(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_command_maps_to_a_route() {
        let cmds = [
            CtlCommand::Ping,
            CtlCommand::Boot,
            CtlCommand::Info,
            CtlCommand::Shutdown { timeout: Some(5) },
            CtlCommand::Reboot,
            CtlCommand::Delete,
            CtlCommand::ShutdownVmm,
            CtlCommand::Host {
                all: true,
                id: Some("10de:2335".into()),
            },
        ];
        for c in &cmds {
            let (m, p, _) = to_request(c).unwrap();
            let path = p.split('?').next().unwrap();
            assert!(
                crate::api::ROUTES
                    .iter()
                    .any(|r| r.method == m && r.path == path),
                "{c:?} -> {m} {p}"
            );
        }
        let (_, p, b) = to_request(&CtlCommand::Shutdown { timeout: Some(5) }).unwrap();
        assert_eq!(p, "/api/v1/vm.shutdown");
        assert_eq!(b.unwrap(), b"{\"timeout_secs\": 5}");
        let (_, p, _) = to_request(&cmds[7]).unwrap();
        assert_eq!(p, "/api/v1/host?class=all&id=10de:2335");
        assert!(to_request(&CtlCommand::Create {
            file: "/nonexistent/vm.json".into()
        })
        .is_err());
    }
}
