//! The API server: a unix socket (mode 0600, refused if live, replaced if stale), one
//! acceptor thread and a small pool of workers, each serving one request per connection
//! with a read deadline, so a slow or hostile client holds at most one worker for a few
//! seconds and never the server. Every server thread installs the `api` seccomp filter
//! before it accepts or serves anything.

use std::io::{ErrorKind, Read, Write};
use std::os::fd::AsRawFd;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use vmm_sys_util::eventfd::EventFd;

use super::handlers::{self, ApiError, Backend};
use super::http::{self, ReadOutcome, Response};
use crate::seccomp::{SeccompError, SeccompFilters, ThreadKind};

/// Worker threads.
pub const WORKERS: usize = 4;
/// Connections accepted but not yet served; beyond that new ones get 503.
const QUEUE: usize = 64;
/// Longest wait for one read of a request.
const READ_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest time to receive a whole request.
const REQUEST_DEADLINE: Duration = Duration::from_secs(5);
/// Longest wait to write an answer.
const WRITE_TIMEOUT: Duration = Duration::from_secs(5);
/// After refusing a request whose body was not read, how much of it to discard so the
/// client can read the answer.
const DRAIN_LIMIT: usize = 1 << 20;

/// Errors starting the server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// Another server answers on the socket.
    #[error("{0} is in use: a server is listening on it (stop it, or pick another path)")]
    Live(PathBuf),
    /// The path is something else than a socket.
    #[error("{0} exists and is not a socket: refusing to replace it")]
    NotSocket(PathBuf),
    /// Creating the socket failed.
    #[error("cannot create the API socket {path}: {source}")]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// Underlying error.
        source: std::io::Error,
    },
    /// Threads or eventfds.
    #[error("cannot start the API server: {0}")]
    Start(#[source] std::io::Error),
    /// A server thread could not install its seccomp filter.
    #[error("cannot start the API server: {0}")]
    Seccomp(#[source] SeccompError),
}

/// Creates a listening socket at `path` with mode 0600. If `path` exists: a socket something
/// listens on is refused; a stale socket is replaced; anything else is refused.
///
/// The socket is bound in a fresh 0700 directory beside `path`, set to 0600 and renamed
/// into place, so it is never reachable with wider permissions.
pub fn bind_socket(path: &Path) -> Result<UnixListener, ServerError> {
    let sock_err = |source| ServerError::Socket {
        path: path.to_path_buf(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => {
            if UnixStream::connect(path).is_ok() {
                return Err(ServerError::Live(path.to_path_buf()));
            }
            log::info!("replacing the stale socket {}", path.display());
        }
        Ok(_) => return Err(ServerError::NotSocket(path.to_path_buf())),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(sock_err(e)),
    }
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let parent = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let private = parent.join(format!(
        ".conduit-api-{}-{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&private)
        .map_err(sock_err)?;
    let result = (|| {
        let tmp = private.join("s");
        let listener = UnixListener::bind(&tmp)?;
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600))?;
        std::fs::rename(&tmp, path)?;
        Ok(listener)
    })();
    let _ = std::fs::remove_dir_all(&private);
    result.map_err(sock_err)
}

/// Called once `vmm.shutdown` has been answered.
pub type OnShutdown = Box<dyn Fn() + Send + Sync>;

/// A running API server. Dropping it (or [`Server::stop`]) stops the threads and removes
/// the socket.
pub struct Server {
    path: PathBuf,
    wake: Arc<EventFd>,
    acceptor: Option<JoinHandle<()>>,
    workers: Vec<JoinHandle<()>>,
}

impl Server {
    /// Serves `backend` on `path`; `on_shutdown` runs after `vmm.shutdown` was answered.
    /// Returns once every server thread runs under the `api` filter of `filters`.
    pub fn start(
        path: &Path,
        backend: Arc<dyn Backend>,
        on_shutdown: OnShutdown,
        filters: &Arc<SeccompFilters>,
    ) -> Result<Server, ServerError> {
        let listener = bind_socket(path)?;
        let remove = || {
            let _ = std::fs::remove_file(path);
        };
        if let Err(e) = listener.set_nonblocking(true) {
            remove();
            return Err(ServerError::Start(e));
        }
        let wake = match EventFd::new(libc::EFD_NONBLOCK) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                remove();
                return Err(ServerError::Start(e));
            }
        };
        let (tx, rx) = mpsc::sync_channel::<UnixStream>(QUEUE);
        let rx = Arc::new(Mutex::new(rx));
        let on_shutdown: Arc<OnShutdown> = Arc::new(on_shutdown);
        let mut server = Server {
            path: path.to_path_buf(),
            wake: wake.clone(),
            acceptor: None,
            workers: Vec::new(),
        };
        let (confined_tx, confined) = mpsc::sync_channel(WORKERS + 1);
        // Each thread reports whether its filter is in, and serves only if it is.
        let confine = move |filters: Arc<SeccompFilters>| {
            let report = confined_tx.clone();
            move || filters.apply_and_report(ThreadKind::Api, &report)
        };
        for i in 0..WORKERS {
            let (rx, backend, on_shutdown) = (rx.clone(), backend.clone(), on_shutdown.clone());
            let confined = confine(filters.clone());
            match std::thread::Builder::new()
                .name(format!("api-worker{i}"))
                .spawn(move || {
                    if confined() {
                        worker(&rx, backend.as_ref(), on_shutdown.as_ref())
                    }
                }) {
                Ok(w) => server.workers.push(w),
                Err(e) => {
                    // Workers leave once the queue's sender is gone; then `server` drops.
                    drop(tx);
                    return Err(ServerError::Start(e));
                }
            }
        }
        let confined_acceptor = confine(filters.clone());
        let acceptor = std::thread::Builder::new()
            .name("api-accept".into())
            .spawn(move || {
                if confined_acceptor() {
                    acceptor(&listener, &wake, &tx)
                }
            })
            .map_err(ServerError::Start)?;
        server.acceptor = Some(acceptor);
        for _ in 0..=WORKERS {
            match confined.recv() {
                Ok(Ok(())) => {}
                // Threads that failed have returned; dropping `server` stops the others.
                Ok(Err(e)) => return Err(ServerError::Seccomp(e)),
                Err(_) => {
                    return Err(ServerError::Start(std::io::Error::other(
                        "a server thread ended while starting",
                    )))
                }
            }
        }
        Ok(server)
    }

    /// The socket path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Stops accepting, lets the workers finish the requests they hold, removes the socket.
    pub fn stop(mut self) {
        self.shut();
    }

    fn shut(&mut self) {
        if let Err(e) = self.wake.write(1) {
            log::error!("cannot wake the API acceptor: {e}");
        }
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.acceptor.is_some() || !self.workers.is_empty() {
            self.shut();
        }
    }
}

/// Waits for connections (or the wake eventfd) and queues them for the workers.
fn acceptor(listener: &UnixListener, wake: &EventFd, queue: &SyncSender<UnixStream>) {
    loop {
        let mut fds = [
            libc::pollfd {
                fd: listener.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: wake.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: fds is a valid array of two pollfd for the duration of the call.
        let rc = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if rc < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            log::error!("API acceptor: poll failed: {e}");
            return;
        }
        if fds[1].revents != 0 {
            return;
        }
        loop {
            match listener.accept() {
                Ok((stream, _)) => match queue.try_send(stream) {
                    Ok(()) => {}
                    Err(TrySendError::Full(mut stream)) => {
                        let _ = stream.set_write_timeout(Some(Duration::from_millis(100)));
                        let _ = http::write_response(
                            &mut stream,
                            &error_response(&ApiError::new(
                                503,
                                "busy",
                                "too many requests in flight; retry",
                            )),
                        );
                    }
                    Err(TrySendError::Disconnected(_)) => return,
                },
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(e) => {
                    // E.g. EMFILE: leave the connection in the backlog and try later.
                    log::warn!("API acceptor: accept failed: {e}");
                    std::thread::sleep(Duration::from_millis(50));
                    break;
                }
            }
        }
    }
}

fn error_response(e: &ApiError) -> Response {
    Response {
        status: e.status,
        body: Some(serde_json::to_string(e).unwrap_or_default()),
        allow: None,
    }
}

fn worker(queue: &Mutex<Receiver<UnixStream>>, backend: &dyn Backend, on_shutdown: &OnShutdown) {
    loop {
        let next = queue.lock().unwrap_or_else(|p| p.into_inner()).recv();
        let Ok(stream) = next else {
            return;
        };
        if serve_one(stream, backend) {
            on_shutdown();
        }
    }
}

/// Serves one connection; true when it was `vmm.shutdown`.
fn serve_one(mut stream: UnixStream, backend: &dyn Backend) -> bool {
    let _ = stream.set_read_timeout(Some(READ_TIMEOUT));
    let _ = stream.set_write_timeout(Some(WRITE_TIMEOUT));
    let deadline = Instant::now() + REQUEST_DEADLINE;
    let (response, stop, drain) = match http::read_request(&mut stream, Some(deadline)) {
        ReadOutcome::Closed => return false,
        ReadOutcome::Refuse(e) => {
            let api = ApiError::new(e.status, e.error, e.detail);
            (error_response(&api), false, e.status == 413)
        }
        ReadOutcome::Request(req) => {
            // A panic in a handler must not take the worker (and the server) down.
            let reply = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                handlers::handle(backend, &req)
            }));
            match reply {
                Ok(r) => (r.response, r.stop_server, false),
                Err(_) => (
                    error_response(&ApiError::internal(
                        "internal error",
                        format!("the handler of {} {} panicked", req.method, req.path),
                    )),
                    false,
                    false,
                ),
            }
        }
    };
    if let Err(e) = http::write_response(&mut stream, &response) {
        log::debug!("API: cannot write the answer: {e}");
    }
    if drain {
        // The client may still be sending the refused body; read (and drop) some of it so
        // it gets to read the answer instead of a broken pipe.
        let _ = stream.shutdown(std::net::Shutdown::Write);
        let _ = stream.set_read_timeout(Some(Duration::from_millis(200)));
        let mut sink = [0u8; 16 * 1024];
        let mut total = 0;
        while total < DRAIN_LIMIT {
            match stream.read(&mut sink) {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    }
    let _ = stream.flush();
    stop
}
