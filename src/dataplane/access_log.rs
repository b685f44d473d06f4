//! The optional JSON access log, one writer per worker: lines are built by hand into the
//! worker's own buffer and written with one `write(2)` per flush, without locks.
//!
//! Each worker opens the file itself with `O_APPEND`, so whole-buffer writes from different
//! workers never interleave inside a line (the kernel appends each `write` at the end of the
//! file atomically for regular files). A buffer holds whole lines only and is flushed when it
//! reaches [`FLUSH_BYTES`], from the worker's 50 ms ticker, and when the worker stops. Writes
//! are blocking, as nginx's buffered `access_log`: to the page cache, at most once per 64 KiB.
//! On stdout (possibly a pipe, where only writes up to `PIPE_BUF` are atomic) a flush is cut at
//! line boundaries into writes of at most `PIPE_BUF` bytes.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::io::Write as _;
use std::mem::ManuallyDrop;
use std::net::SocketAddr;
use std::os::fd::FromRawFd;
use std::time::{Duration, SystemTime};

use crate::config::AccessLogTarget;

/// A buffer is written out once it holds this many bytes.
pub const FLUSH_BYTES: usize = 64 * 1024;
const PIPE_BUF: usize = 4096;

enum Sink {
    File(File),
    /// fd 1, borrowed: never closed by the worker.
    Stdout(ManuallyDrop<File>),
}

/// One worker's access log; `enabled()` is false when the profile says `"off"`.
pub struct AccessLog {
    sink: Option<Sink>,
    buf: RefCell<Vec<u8>>,
    /// Small buffers connections borrow to keep a request's method, target and id until the
    /// response is done (the head's buffer is reused by then).
    scratch: RefCell<Vec<Vec<u8>>>,
    write_failed: Cell<bool>,
}

/// What one access-log line says about a request.
pub struct Entry<'a> {
    pub time: SystemTime,
    pub client: SocketAddr,
    pub method: Option<&'a [u8]>,
    pub path: Option<&'a [u8]>,
    pub frontend: Option<&'a str>,
    pub upstream: Option<SocketAddr>,
    pub status: u16,
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub duration: Duration,
    pub upstream_duration: Option<Duration>,
    pub request_id: Option<&'a [u8]>,
}

impl AccessLog {
    pub fn off() -> AccessLog {
        AccessLog {
            sink: None,
            buf: RefCell::default(),
            scratch: RefCell::default(),
            write_failed: Cell::new(false),
        }
    }

    /// Open the worker's own handle on the target.
    pub fn open(target: &AccessLogTarget) -> std::io::Result<AccessLog> {
        let sink = match target {
            AccessLogTarget::Off => return Ok(AccessLog::off()),
            // SAFETY: fd 1 stays open for the life of the process; ManuallyDrop never closes it.
            AccessLogTarget::Stdout => Sink::Stdout(ManuallyDrop::new(unsafe {
                File::from_raw_fd(libc::STDOUT_FILENO)
            })),
            AccessLogTarget::File(path) => Sink::File(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)?,
            ),
        };
        Ok(AccessLog {
            sink: Some(sink),
            buf: RefCell::new(Vec::with_capacity(FLUSH_BYTES + 4096)),
            scratch: RefCell::default(),
            write_failed: Cell::new(false),
        })
    }

    pub fn enabled(&self) -> bool {
        self.sink.is_some()
    }

    pub fn take_scratch(&self) -> Vec<u8> {
        self.scratch.borrow_mut().pop().unwrap_or_default()
    }

    pub fn give_scratch(&self, mut v: Vec<u8>) {
        let mut s = self.scratch.borrow_mut();
        if s.len() < 1024 && v.capacity() <= 16 * 1024 {
            v.clear();
            s.push(v);
        }
    }

    /// Append one line; flush when the buffer is full.
    pub fn write(&self, e: &Entry<'_>) {
        if self.sink.is_none() {
            return;
        }
        let full = {
            let mut buf = self.buf.borrow_mut();
            format_line(&mut buf, e);
            buf.len() >= FLUSH_BYTES
        };
        if full {
            self.flush();
        }
    }

    /// Write out every buffered line.
    pub fn flush(&self) {
        let Some(sink) = &self.sink else { return };
        let mut buf = self.buf.borrow_mut();
        if buf.is_empty() {
            return;
        }
        let res = match sink {
            Sink::File(f) => (&*f).write_all(&buf),
            Sink::Stdout(f) => write_lines_atomically(f, &buf),
        };
        buf.clear();
        match res {
            Err(e) if !self.write_failed.replace(true) => {
                tracing::error!("access log write failed, lines are lost until it recovers: {e}");
            }
            Ok(()) if self.write_failed.replace(false) => {
                tracing::warn!("access log writes work again");
            }
            _ => {}
        }
    }
}

/// Write `buf` (whole lines) in writes of at most `PIPE_BUF` bytes cut at line ends, so that
/// lines of concurrent writers never interleave on a pipe. A single longer line goes alone.
fn write_lines_atomically(mut out: &File, mut buf: &[u8]) -> std::io::Result<()> {
    while !buf.is_empty() {
        let window = &buf[..buf.len().min(PIPE_BUF)];
        let cut = match memchr::memrchr(b'\n', window) {
            Some(i) => i + 1,
            None => memchr::memchr(b'\n', buf).map_or(buf.len(), |i| i + 1),
        };
        out.write_all(&buf[..cut])?;
        buf = &buf[cut..];
    }
    Ok(())
}

/// One JSON object and a newline.
pub fn format_line(out: &mut Vec<u8>, e: &Entry<'_>) {
    out.extend_from_slice(b"{\"time\":\"");
    write_rfc3339_ms(out, e.time);
    out.extend_from_slice(b"\",\"client\":\"");
    // Writing into a Vec cannot fail.
    let _ = write!(out, "{}", e.client);
    out.extend_from_slice(b"\",\"method\":");
    json_opt_bytes(out, e.method);
    out.extend_from_slice(b",\"path\":");
    json_opt_bytes(out, e.path);
    out.extend_from_slice(b",\"frontend\":");
    json_opt_bytes(out, e.frontend.map(str::as_bytes));
    out.extend_from_slice(b",\"upstream\":");
    match e.upstream {
        Some(a) => {
            let _ = write!(out, "\"{a}\"");
        }
        None => out.extend_from_slice(b"null"),
    }
    let _ = write!(
        out,
        ",\"status\":{},\"bytes_in\":{},\"bytes_out\":{},\"duration_ms\":{:.3},\"upstream_ms\":",
        e.status,
        e.bytes_in,
        e.bytes_out,
        e.duration.as_secs_f64() * 1e3
    );
    match e.upstream_duration {
        Some(d) => {
            let _ = write!(out, "{:.3}", d.as_secs_f64() * 1e3);
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"request_id\":");
    json_opt_bytes(out, e.request_id);
    out.extend_from_slice(b"}\n");
}

fn json_opt_bytes(out: &mut Vec<u8>, v: Option<&[u8]>) {
    match v {
        Some(v) => json_string(out, v),
        None => out.extend_from_slice(b"null"),
    }
}

/// A JSON string literal of `v`. Bytes that are not UTF-8 become `\u00XX` (each byte as its
/// Latin-1 code point) so the line stays valid JSON whatever a client sent.
pub fn json_string(out: &mut Vec<u8>, v: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let utf8 = std::str::from_utf8(v).is_ok();
    out.push(b'"');
    for &b in v {
        match b {
            b'"' => out.extend_from_slice(b"\\\""),
            b'\\' => out.extend_from_slice(b"\\\\"),
            b'\n' => out.extend_from_slice(b"\\n"),
            b'\r' => out.extend_from_slice(b"\\r"),
            b'\t' => out.extend_from_slice(b"\\t"),
            0..=0x1f | 0x7f => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            0x80..=0xff if !utf8 => {
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(b >> 4)]);
                out.push(HEX[usize::from(b & 15)]);
            }
            _ => out.push(b),
        }
    }
    out.push(b'"');
}

/// `2024-05-01T12:34:56.789Z`.
pub fn write_rfc3339_ms(out: &mut Vec<u8>, t: SystemTime) {
    let d = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or(Duration::ZERO);
    let secs = d.as_secs();
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let (y, m, day) = civil_from_days(days);
    let _ = write!(
        out,
        "{y:04}-{m:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem / 60 % 60,
        rem % 60,
        d.subsec_millis()
    );
}

/// Proleptic Gregorian date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(secs: u64, ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(secs * 1000 + ms)
    }

    #[test]
    fn timestamps_are_rfc3339_utc_with_milliseconds() {
        let mut out = Vec::new();
        write_rfc3339_ms(&mut out, at(0, 0));
        out.push(b' ');
        write_rfc3339_ms(&mut out, at(951_782_400, 7)); // 2000-02-29
        out.push(b' ');
        write_rfc3339_ms(&mut out, at(1_709_251_199, 999)); // 2024-02-29T23:59:59
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "1970-01-01T00:00:00.000Z 2000-02-29T00:00:00.007Z 2024-02-29T23:59:59.999Z"
        );
    }

    #[test]
    fn strings_are_escaped_into_valid_json() {
        for raw in [
            &b"/plain?q=1"[..],
            b"quote\" back\\slash",
            b"ctl\x00\x01\x1f\x7f\n\r\t",
            "caf\u{e9}".as_bytes(),
            b"not utf8 \xff\xfe",
        ] {
            let mut out = Vec::new();
            json_string(&mut out, raw);
            let back: String = serde_json::from_slice(&out)
                .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out)));
            if let Ok(s) = std::str::from_utf8(raw) {
                assert_eq!(back, s);
            } else {
                assert_eq!(back, "not utf8 \u{ff}\u{fe}");
            }
        }
    }

    #[test]
    fn a_line_is_one_json_object_with_every_field() {
        let mut out = Vec::new();
        format_line(
            &mut out,
            &Entry {
                time: at(1_700_000_000, 123),
                client: "127.0.0.1:5555".parse().unwrap(),
                method: Some(b"GET"),
                path: Some(b"/a?b=\"c\""),
                frontend: Some("f1"),
                upstream: Some("10.0.0.1:80".parse().unwrap()),
                status: 200,
                bytes_in: 78,
                bytes_out: 120,
                duration: Duration::from_micros(1234),
                upstream_duration: Some(Duration::from_micros(1000)),
                request_id: Some(b"abc"),
            },
        );
        assert_eq!(out.iter().filter(|b| **b == b'\n').count(), 1);
        assert!(out.ends_with(b"}\n"));
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["time"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["path"], "/a?b=\"c\"");
        assert_eq!(v["status"], 200);
        assert_eq!(v["duration_ms"], 1.234);
        assert_eq!(v["upstream"], "10.0.0.1:80");
        assert_eq!(v["request_id"], "abc");
    }

    #[test]
    fn stdout_writes_are_cut_at_line_ends_within_pipe_buf() {
        let (r, w) = {
            let mut fds = [0; 2];
            // SAFETY: pipe writes two fds into the array.
            assert_eq!(unsafe { libc::pipe(fds.as_mut_ptr()) }, 0);
            // SAFETY: both fds were just created and are owned here.
            unsafe { (File::from_raw_fd(fds[0]), File::from_raw_fd(fds[1])) }
        };
        let line = format!("{}\n", "x".repeat(999));
        let buf = line.repeat(9);
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            std::io::Read::read_to_end(&mut &r, &mut all).unwrap();
            all
        });
        write_lines_atomically(&w, buf.as_bytes()).unwrap();
        drop(w);
        assert_eq!(reader.join().unwrap(), buf.as_bytes());
    }
}
