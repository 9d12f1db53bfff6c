//! Guest stdout and stderr: captured per request, bounded, and written to the host log tagged
//! with the function name and request id once the call ends (also when it traps).

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes kept per stream per request; the rest is counted and dropped. Output never fails for
/// the guest (Rust's `println!` panics on a write error), it is only truncated.
pub const MAX_OUTPUT_BYTES: usize = 16 << 10;

/// The most a guest may be told it can write in one go; writes are accepted whatever their size.
const WRITE_BUDGET: usize = 64 << 10;

/// One request's captured output.
pub struct GuestLog {
    function: String,
    request_id: Arc<str>,
    stdout: Capture,
    stderr: Capture,
}

impl GuestLog {
    pub fn new(function: &str, request_id: &str) -> Self {
        GuestLog {
            function: function.to_owned(),
            request_id: Arc::from(request_id),
            stdout: Capture::default(),
            stderr: Capture::default(),
        }
    }

    /// The request's id, for log lines about it written elsewhere.
    pub(crate) fn request_id(&self) -> Arc<str> {
        self.request_id.clone()
    }

    pub(crate) fn stdout(&self) -> Capture {
        self.stdout.clone()
    }

    pub(crate) fn stderr(&self) -> Capture {
        self.stderr.clone()
    }

    /// The last non-empty line the guest wrote to stderr (e.g. its panic message), trimmed to a
    /// readable length.
    pub fn last_stderr_line(&self) -> Option<String> {
        const MAX_CHARS: usize = 300;
        let buf = self.stderr.lock();
        let text = String::from_utf8_lossy(&buf.bytes);
        let lines: Vec<&str> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect();
        // Rust prints "thread '..' panicked at src/lib.rs:3:5:" and the message on the next line.
        let line = match lines.iter().rposition(|l| l.contains("panicked at")) {
            Some(at) => format!(
                "{} {}",
                lines[at],
                lines.get(at + 1).copied().unwrap_or_default()
            ),
            None => (*lines.last()?).to_owned(),
        };
        Some(line.trim().chars().take(MAX_CHARS).collect())
    }

    /// Writes what the guest printed to the host log, a line per event.
    pub fn emit(&self) {
        for (stream, capture) in [("stdout", &self.stdout), ("stderr", &self.stderr)] {
            let buf = capture.lock();
            let text = String::from_utf8_lossy(&buf.bytes);
            for line in text.lines().filter(|l| !l.is_empty()) {
                tracing::info!(target: "goldfish::guest", function = %self.function, request_id = %self.request_id, stream, "{line}");
            }
            if buf.dropped > 0 {
                tracing::warn!(target: "goldfish::guest", function = %self.function, request_id = %self.request_id, stream,
                    "guest output truncated: {} bytes over the {MAX_OUTPUT_BYTES}-byte limit dropped", buf.dropped);
            }
        }
    }
}

#[derive(Default)]
struct Buffer {
    bytes: Vec<u8>,
    dropped: usize,
}

impl Buffer {
    fn append(&mut self, data: &[u8]) {
        let room = MAX_OUTPUT_BYTES.saturating_sub(self.bytes.len());
        let kept = data.len().min(room);
        self.bytes.extend_from_slice(&data[..kept]);
        self.dropped += data.len() - kept;
    }
}

/// A bounded in-memory sink usable as a WASI stdout/stderr.
#[derive(Clone, Default)]
pub(crate) struct Capture {
    /// `std::sync::Mutex`: held only to append bytes, never across an `.await`.
    buffer: Arc<Mutex<Buffer>>,
}

impl Capture {
    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // Appending cannot leave the buffer inconsistent, so a poisoned lock is still usable.
        self.buffer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.lock().append(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        self.lock().append(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_panic_message_is_the_line_to_report() {
        let log = GuestLog::new("f", "r");
        log.stderr.lock().append(b"starting\nthread '<unnamed>' panicked at src/lib.rs:3:5:\ndeliberate trap\nnote: run with `RUST_BACKTRACE=1`\n");
        assert_eq!(
            log.last_stderr_line().as_deref(),
            Some("thread '<unnamed>' panicked at src/lib.rs:3:5: deliberate trap")
        );
        let quiet = GuestLog::new("f", "r");
        assert_eq!(quiet.last_stderr_line(), None);
    }

    #[test]
    fn output_past_the_limit_is_counted_not_kept() {
        let mut b = Buffer::default();
        b.append(&vec![b'x'; MAX_OUTPUT_BYTES - 2]);
        b.append(b"hello");
        assert_eq!(b.bytes.len(), MAX_OUTPUT_BYTES);
        assert_eq!(b.dropped, 3);
    }
}
