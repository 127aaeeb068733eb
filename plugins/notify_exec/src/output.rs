//! The command's stdout and stderr: read on threads of their own (a chatty command never
//! blocks on a full pipe), logged line by line within a budget per event.

use std::io::{BufRead, BufReader, ErrorKind, Read};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use vpcrouter_plugin_api::prelude::*;
use vpcrouter_plugin_api::sync::lock;

/// Output lines logged per event at most (stdout and stderr together).
pub const MAX_LINES: usize = 64;
/// Output bytes logged per event at most (stdout and stderr together).
pub const MAX_BYTES: usize = 8 * 1024;
/// A longer line is cut there, and logged with ` ...` after it.
const MAX_LINE_BYTES: usize = 1024;
/// What follows the last line logged when the budget ran out.
const TRUNCATED: &str = "exec: ... output truncated";

/// Which of the command's outputs a line came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Stream {
    /// Logged at info level.
    Stdout,
    /// Logged at warn level; its last line goes into the error.
    Stderr,
}

/// What may still be logged for this event, shared by the two readers.
#[derive(Debug)]
struct Budget {
    /// Lines that may still be logged.
    lines_left: usize,
    /// Bytes that may still be logged.
    bytes_left: usize,
    /// The budget ran out (the truncation line was logged).
    truncated: bool,
    /// The last non-empty line on stderr (logged or not), for the error message.
    last_stderr: Option<String>,
}

/// What to do with one line.
enum Verdict {
    /// Log it.
    Log,
    /// The budget just ran out: log the truncation line.
    Truncate,
    /// Drop it.
    Drop,
}

impl Budget {
    /// Takes `line` from the budget.
    fn take(&mut self, stream: Stream, line: &str) -> Verdict {
        if stream == Stream::Stderr && !line.trim().is_empty() {
            self.last_stderr = Some(line.trim().to_string());
        }
        if self.truncated {
            return Verdict::Drop;
        }
        if self.lines_left == 0 || line.len() > self.bytes_left {
            self.truncated = true;
            return Verdict::Truncate;
        }
        self.lines_left -= 1;
        self.bytes_left -= line.len();
        Verdict::Log
    }
}

/// The readers of one command's output.
pub struct Output {
    /// The budget, shared with the readers.
    budget: Arc<Mutex<Budget>>,
    /// Each reader sends one message when its stream ended.
    done: Receiver<()>,
    /// How many readers run.
    readers: usize,
}

impl Output {
    /// Starts a reader for each stream.
    pub fn start(
        stdout: Option<impl Read + Send + 'static>,
        stderr: Option<impl Read + Send + 'static>,
        log: &Logger,
    ) -> Output {
        let budget = Arc::new(Mutex::new(Budget {
            lines_left: MAX_LINES,
            bytes_left: MAX_BYTES,
            truncated: false,
            last_stderr: None,
        }));
        let (tx, done) = channel();
        let mut readers = 0;
        let reader = Reader { budget: budget.clone(), log: log.clone(), done: tx };
        if let Some(stdout) = stdout {
            readers += usize::from(reader.clone().spawn(Stream::Stdout, stdout));
        }
        if let Some(stderr) = stderr {
            readers += usize::from(reader.spawn(Stream::Stderr, stderr));
        }
        Output { budget, done, readers }
    }

    /// Waits up to `grace` for both streams to end; the last line on stderr, if any.
    pub fn finish(self, grace: Duration) -> Option<String> {
        let deadline = Instant::now() + grace;
        for _ in 0..self.readers {
            let left = deadline.saturating_duration_since(Instant::now());
            if self.done.recv_timeout(left).is_err() {
                break;
            }
        }
        lock(&self.budget).last_stderr.clone()
    }
}

/// What a reader thread needs.
#[derive(Clone)]
struct Reader {
    /// The budget of the event.
    budget: Arc<Mutex<Budget>>,
    /// Where lines go.
    log: Logger,
    /// Told when the stream ended.
    done: Sender<()>,
}

impl Reader {
    /// Reads `stream` on a thread; false when no thread could be started (the pipe is then
    /// closed: the command's writes to it fail).
    fn spawn(self, which: Stream, stream: impl Read + Send + 'static) -> bool {
        let log = self.log.clone();
        let name = format!("exec-{which:?}").to_lowercase();
        match std::thread::Builder::new().name(name).spawn(move || self.read(which, stream)) {
            Ok(_) => true,
            Err(e) => {
                log.warn(format!("exec: cannot start a thread to read the command's {which:?}: {e}"));
                false
            }
        }
    }

    /// Logs the lines of `stream` within the budget, reads and drops the rest.
    fn read(self, which: Stream, stream: impl Read) {
        let mut reader = BufReader::new(stream);
        let mut line = Vec::new();
        loop {
            match read_line(&mut reader, &mut line) {
                Ok(false) => break,
                Ok(true) => self.line(which, &line),
                Err(e) => {
                    self.log.debug(format!("exec: cannot read the command's {which:?}: {e}"));
                    break;
                }
            }
        }
        // The receiver may be gone (the delivery stopped waiting): nothing to tell then.
        let _ = self.done.send(());
    }

    /// Logs one line, or the truncation line, or nothing.
    fn line(&self, which: Stream, raw: &[u8]) {
        let cut = raw.len() > MAX_LINE_BYTES;
        let text = String::from_utf8_lossy(&raw[..raw.len().min(MAX_LINE_BYTES)]);
        let text = text.trim_end_matches('\r');
        let verdict = lock(&self.budget).take(which, text);
        let message = match verdict {
            Verdict::Drop => return,
            Verdict::Truncate => TRUNCATED.to_string(),
            Verdict::Log if cut => format!("exec: {text} ..."),
            Verdict::Log => format!("exec: {text}"),
        };
        match which {
            Stream::Stdout => self.log.info(message),
            Stream::Stderr => self.log.warn(message),
        }
    }
}

/// Reads one line into `line` (without its newline), keeping at most a few bytes more than
/// [`MAX_LINE_BYTES`] of it and dropping the rest; false at end of stream.
fn read_line(reader: &mut impl BufRead, line: &mut Vec<u8>) -> std::io::Result<bool> {
    line.clear();
    let mut any = false;
    loop {
        let buf = match reader.fill_buf() {
            Ok(buf) => buf,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        if buf.is_empty() {
            return Ok(any);
        }
        any = true;
        let (end, used, complete) = match buf.iter().position(|&b| b == b'\n') {
            Some(i) => (i, i + 1, true),
            None => (buf.len(), buf.len(), false),
        };
        let room = (MAX_LINE_BYTES + 1).saturating_sub(line.len());
        line.extend_from_slice(&buf[..end.min(room)]);
        reader.consume(used);
        if complete {
            return Ok(true);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_are_split_and_long_ones_cut() {
        let long = "x".repeat(5000);
        let text = format!("one\r\n\n{long}\nlast");
        let mut reader = BufReader::with_capacity(16, text.as_bytes());
        let mut line = Vec::new();
        let mut lines = Vec::new();
        while read_line(&mut reader, &mut line).unwrap() {
            lines.push(String::from_utf8(line.clone()).unwrap());
        }
        assert_eq!(lines.len(), 4, "{lines:?}");
        assert_eq!((lines[0].as_str(), lines[1].as_str(), lines[3].as_str()), ("one\r", "", "last"));
        assert_eq!(lines[2].len(), MAX_LINE_BYTES + 1, "kept one byte more to know it was cut");
    }

    #[test]
    fn the_budget_counts_lines_and_bytes_and_keeps_the_last_stderr_line() {
        let mut budget = Budget { lines_left: 2, bytes_left: 10, truncated: false, last_stderr: None };
        assert!(matches!(budget.take(Stream::Stdout, "12345"), Verdict::Log));
        assert!(matches!(budget.take(Stream::Stderr, "123456"), Verdict::Truncate), "over the bytes");
        assert!(matches!(budget.take(Stream::Stderr, "1"), Verdict::Drop));
        assert!(matches!(budget.take(Stream::Stderr, "  "), Verdict::Drop));
        assert_eq!(budget.last_stderr.as_deref(), Some("1"), "blank lines do not count as the last");
        let mut budget = Budget { lines_left: 1, bytes_left: 100, truncated: false, last_stderr: None };
        assert!(matches!(budget.take(Stream::Stdout, "a"), Verdict::Log));
        assert!(matches!(budget.take(Stream::Stdout, "b"), Verdict::Truncate), "over the lines");
    }
}
