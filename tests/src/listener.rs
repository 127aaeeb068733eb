//! A TCP listener standing in for a router host: it accepts and drops connections (health
//! checks only connect) until dropped, which closes the port.

use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use anyhow::Context;

/// A listening router host.
pub struct Listener {
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Listener {
    /// Listens on `ip:port` (`port` 0 picks a free one); returns the listener and its port.
    pub fn bind(ip: &str, port: u16) -> anyhow::Result<(Listener, u16)> {
        let l = TcpListener::bind((ip, port)).with_context(|| format!("bind {ip}:{port}"))?;
        let port = l.local_addr()?.port();
        l.set_nonblocking(true)?;
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let thread = std::thread::spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                if l.accept().is_err() {
                    std::thread::sleep(Duration::from_millis(2));
                }
            }
        });
        Ok((Listener { stop, thread: Some(thread) }, port))
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
