//! A thread under the `vmm` filter that starts threads for others. A thread inherits the
//! filters of the thread that starts it, so a VM thread started by an API thread would run
//! under the `api` list; started here, it runs under `vmm`, like one the main thread starts.

use std::io;
use std::sync::{mpsc, Arc};
use std::thread::JoinHandle;

use super::{SeccompError, SeccompFilters, ThreadKind};

/// What a started thread runs.
pub type Job = Box<dyn FnOnce() + Send + 'static>;

struct Request {
    name: String,
    job: Job,
    reply: mpsc::SyncSender<io::Result<JoinHandle<()>>>,
}

/// Starts threads from a thread under the `vmm` filter. Dropping it stops its thread.
pub struct ThreadSpawner {
    requests: Option<mpsc::Sender<Request>>,
    thread: Option<JoinHandle<()>>,
    filters: Arc<SeccompFilters>,
}

impl std::fmt::Debug for ThreadSpawner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreadSpawner")
            .field("filters", &self.filters)
            .finish()
    }
}

impl ThreadSpawner {
    /// Starts the spawner thread (`vmm-spawner`) and installs the `vmm` filter of `filters`
    /// in it. Call it before the calling thread installs a filter of another kind.
    pub fn start(filters: Arc<SeccompFilters>) -> Result<Self, SeccompError> {
        let (tx, rx) = mpsc::channel::<Request>();
        let (ready_tx, ready_rx) = mpsc::sync_channel(1);
        let f = filters.clone();
        let thread = std::thread::Builder::new()
            .name("vmm-spawner".into())
            .spawn(move || {
                if !f.apply_and_report(ThreadKind::Vmm, &ready_tx) {
                    return;
                }
                while let Ok(r) = rx.recv() {
                    let started = std::thread::Builder::new().name(r.name).spawn(r.job);
                    let _ = r.reply.send(started);
                }
            })
            .map_err(SeccompError::Spawner)?;
        match ready_rx.recv() {
            Ok(Ok(())) => Ok(ThreadSpawner {
                requests: Some(tx),
                thread: Some(thread),
                filters,
            }),
            Ok(Err(e)) => {
                let _ = thread.join();
                Err(e)
            }
            Err(_) => {
                let _ = thread.join();
                Err(SeccompError::Spawner(io::Error::other(
                    "the spawner thread ended while starting",
                )))
            }
        }
    }

    /// The filters (the spawner runs under their `vmm` filter).
    pub fn filters(&self) -> &Arc<SeccompFilters> {
        &self.filters
    }

    /// Starts a thread named `name` running `job`, from the spawner thread.
    pub fn spawn(&self, name: &str, job: Job) -> io::Result<JoinHandle<()>> {
        let gone = || io::Error::other("the VM thread spawner has stopped");
        let (reply, answer) = mpsc::sync_channel(1);
        self.requests
            .as_ref()
            .ok_or_else(gone)?
            .send(Request {
                name: name.to_string(),
                job,
                reply,
            })
            .map_err(|_| gone())?;
        answer.recv().map_err(|_| gone())?
    }
}

impl Drop for ThreadSpawner {
    fn drop(&mut self) {
        // The thread leaves its loop once the channel has no sender.
        self.requests.take();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::seccomp::SeccompMode;

    #[test]
    fn spawns_named_threads_and_stops_when_dropped() {
        let spawner =
            ThreadSpawner::start(SeccompFilters::builtin(SeccompMode::Off).unwrap()).unwrap();
        let (tx, rx) = mpsc::channel();
        let h = spawner
            .spawn(
                "spawned",
                Box::new(move || {
                    let name = std::thread::current().name().map(str::to_string);
                    tx.send(name).unwrap();
                }),
            )
            .unwrap();
        assert_eq!(rx.recv().unwrap().as_deref(), Some("spawned"));
        h.join().unwrap();
        drop(spawner);
    }
}
