//! What systemd would be for hookd: a datagram socket at a path (`NOTIFY_SOCKET`), read by a
//! thread into a list of timestamped `sd_notify` messages.

use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::wait_until;

/// One `sd_notify` datagram, as received.
#[derive(Debug, Clone)]
pub struct Datagram {
    pub at: Instant,
    pub text: String,
}

impl Datagram {
    /// Whether one of its lines is exactly `line` (e.g. `READY=1`).
    pub fn has(&self, line: &str) -> bool {
        self.text.lines().any(|l| l == line)
    }

    /// The value of `KEY=value`.
    pub fn value(&self, key: &str) -> Option<&str> {
        self.text
            .lines()
            .find_map(|l| l.strip_prefix(key)?.strip_prefix('='))
    }
}

/// What systemd would be: a datagram socket at a path, read by a thread into a list.
pub struct NotifySocket {
    pub path: PathBuf,
    received: Arc<Mutex<Vec<Datagram>>>,
    stop: Arc<AtomicBool>,
    reader: Option<JoinHandle<()>>,
}

impl NotifySocket {
    pub fn bind(path: PathBuf) -> NotifySocket {
        let _ = std::fs::remove_file(&path);
        let socket = UnixDatagram::bind(&path)
            .unwrap_or_else(|e| panic!("bind the notify socket {}: {e}", path.display()));
        socket
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("set a read timeout");
        let received = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let reader = std::thread::spawn({
            let received = received.clone();
            let stop = stop.clone();
            move || {
                let mut buf = vec![0u8; 64 * 1024];
                while !stop.load(Ordering::Relaxed) {
                    match socket.recv(&mut buf) {
                        Ok(n) => received.lock().unwrap().push(Datagram {
                            at: Instant::now(),
                            text: String::from_utf8_lossy(&buf[..n]).into_owned(),
                        }),
                        Err(e)
                            if matches!(
                                e.kind(),
                                std::io::ErrorKind::WouldBlock
                                    | std::io::ErrorKind::TimedOut
                                    | std::io::ErrorKind::Interrupted
                            ) => {}
                        Err(e) => panic!("reading the notify socket: {e}"),
                    }
                }
            }
        });
        NotifySocket {
            path,
            received,
            stop,
            reader: Some(reader),
        }
    }

    pub fn all(&self) -> Vec<Datagram> {
        self.received.lock().unwrap().clone()
    }

    /// The index of the first datagram at or after `from` with the line `line`, if any yet.
    pub fn find(&self, line: &str, from: usize) -> Option<(usize, Datagram)> {
        self.all()
            .into_iter()
            .enumerate()
            .skip(from)
            .find(|(_, d)| d.has(line))
    }

    /// Waits for the first datagram at or after index `from` with the line `line`.
    pub async fn wait_for(&self, line: &str, from: usize, deadline: Duration) -> (usize, Datagram) {
        wait_until(
            &format!(
                "{line} on the notify socket (from datagram #{from}; so far {:?})",
                self.texts()
            ),
            deadline,
            || async { self.find(line, from) },
        )
        .await
    }

    pub fn texts(&self) -> Vec<String> {
        self.all().into_iter().map(|d| d.text).collect()
    }
}

impl Drop for NotifySocket {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(reader) = self.reader.take() {
            let _ = reader.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}
