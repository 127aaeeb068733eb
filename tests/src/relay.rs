//! A TCP relay that can hold traffic: to make a call hang on EC2, or to cut a vpcrouter
//! off from etcd without closing its connections.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A running relay; dropping it stops it.
pub struct Relay {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    /// While true, bytes are held (at most 60 s each), not forwarded: connections stay open
    /// but nothing gets through, as in a network partition.
    pub paused: Arc<AtomicBool>,
    stop: Arc<AtomicBool>,
}

impl Relay {
    /// Relays 127.0.0.1:port to `upstream` (`host:port`, or an `http://` URL).
    pub fn start(upstream: &str) -> anyhow::Result<Relay> {
        let upstream = upstream.trim_start_matches("http://").to_string();
        let listener = TcpListener::bind("127.0.0.1:0")?;
        listener.set_nonblocking(true)?;
        let port = listener.local_addr()?.port();
        let (paused, stop) = (Arc::new(AtomicBool::new(false)), Arc::new(AtomicBool::new(false)));
        let (p, s) = (paused.clone(), stop.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((client, _)) => {
                        let Ok(server) = TcpStream::connect(&upstream) else { continue };
                        for (from, to) in
                            [(client.try_clone(), server.try_clone()), (server.try_clone(), client.try_clone())]
                        {
                            if let (Ok(from), Ok(to)) = (from, to) {
                                let (p, s) = (p.clone(), s.clone());
                                std::thread::spawn(move || pump(from, to, &p, &s));
                            }
                        }
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        Ok(Relay { port, paused, stop })
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Copies bytes until EOF or stop; while paused, holds them (at most 60 s).
fn pump(mut from: TcpStream, mut to: TcpStream, paused: &AtomicBool, stop: &AtomicBool) {
    let _ = from.set_read_timeout(Some(Duration::from_millis(200)));
    let mut buf = [0u8; 16 * 1024];
    let end = Instant::now() + Duration::from_secs(300);
    while Instant::now() < end && !stop.load(Ordering::Relaxed) {
        let n = match from.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => continue,
            Err(_) => break,
        };
        let hold_until = Instant::now() + Duration::from_secs(60);
        while paused.load(Ordering::Relaxed) && Instant::now() < hold_until && !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(std::net::Shutdown::Write);
}
