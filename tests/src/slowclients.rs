//! Hostile clients for the status server: each holds a connection and sends one byte of a
//! request head per second (the head never ends), reconnecting when the server closes it.
//! Every client is a thread with a small stack, stopped by [`SlowClients::stop`] (or drop)
//! and in any case at its deadline.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// The head the clients dribble: a header value that never ends.
const HEAD: &[u8] = b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Slow: ";

#[derive(Default)]
struct Counters {
    open: AtomicUsize,
    connects: AtomicU64,
    closed_by_server: AtomicU64,
}

/// Running slow clients.
pub struct SlowClients {
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    threads: Vec<JoinHandle<()>>,
}

impl SlowClients {
    /// Starts `n` clients against `addr`; they stop by themselves at `deadline`.
    pub fn start(addr: SocketAddr, n: usize, deadline: Instant) -> anyhow::Result<SlowClients> {
        let stop = Arc::new(AtomicBool::new(false));
        let counters = Arc::new(Counters::default());
        let mut threads = Vec::with_capacity(n);
        for _ in 0..n {
            let (stop, counters) = (stop.clone(), counters.clone());
            threads.push(
                std::thread::Builder::new()
                    .name("slow-client".into())
                    .stack_size(64 * 1024)
                    .spawn(move || client(addr, &stop, &counters, deadline))?,
            );
        }
        Ok(SlowClients { stop, counters, threads })
    }

    /// Clients holding a connection now.
    pub fn open(&self) -> usize {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// Connections made so far.
    pub fn connects(&self) -> u64 {
        self.counters.connects.load(Ordering::Relaxed)
    }

    /// Connections the server closed so far.
    pub fn closed_by_server(&self) -> u64 {
        self.counters.closed_by_server.load(Ordering::Relaxed)
    }

    /// Stops every client and waits for them (each notices within about a second).
    pub fn stop(mut self) {
        self.stop_in_place();
    }

    fn stop_in_place(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

impl Drop for SlowClients {
    fn drop(&mut self) {
        self.stop_in_place();
    }
}

fn client(addr: SocketAddr, stop: &AtomicBool, counters: &Counters, deadline: Instant) {
    let running = || !stop.load(Ordering::Relaxed) && Instant::now() < deadline;
    let mut buf = [0u8; 1024];
    while running() {
        let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_secs(2)) else {
            std::thread::sleep(Duration::from_millis(100));
            continue;
        };
        counters.connects.fetch_add(1, Ordering::Relaxed);
        counters.open.fetch_add(1, Ordering::Relaxed);
        // The read timeout paces the bytes: one per second, or sooner if the server closes.
        let _ = s.set_read_timeout(Some(Duration::from_secs(1)));
        let _ = s.set_write_timeout(Some(Duration::from_secs(1)));
        let mut sent = 0usize;
        while running() {
            let byte = HEAD.get(sent).copied().unwrap_or(b'a');
            if s.write_all(&[byte]).is_err() {
                counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
                break;
            }
            sent += 1;
            match s.read(&mut buf) {
                Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                // Closed (or answered, e.g. 408): reconnect.
                _ => {
                    counters.closed_by_server.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
        counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}
