//! Captured output: line splitting, the per-executable log store (a bounded ring in
//! memory, a file on disk, live followers), and the runtime's own event log.
//!
//! A subscriber first gets the history, then follows: the store takes the history
//! snapshot and subscribes to the live feed under one lock, so no line is lost or
//! repeated between the two. Lines carry a sequence number from 1, which also lets a
//! follower that fell behind the live feed catch up from the ring or the file.

use std::collections::VecDeque;
use std::fs::File;
use std::io::{BufRead as _, BufReader, Write as _};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use aura_core::Timestamp;
use serde::Serialize;
use tokio::sync::broadcast;

/// Which output stream a line came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Stdout,
    Stderr,
}

impl Channel {
    fn tag(self) -> char {
        match self {
            Channel::Stdout => 'o',
            Channel::Stderr => 'e',
        }
    }

    fn from_tag(c: &str) -> Option<Channel> {
        match c {
            "o" => Some(Channel::Stdout),
            "e" => Some(Channel::Stderr),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Stdout => "stdout",
            Channel::Stderr => "stderr",
        }
    }
}

/// One line of output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LogLine {
    pub seq: u64,
    pub channel: Channel,
    pub timestamp: Timestamp,
    pub line: String,
}

/// The longest line kept; longer lines are split, so that one runaway line cannot take
/// unbounded memory.
pub(crate) const MAX_LINE: usize = 16 * 1024;

/// Splits a byte stream into lines (without the newline), lossily decoding UTF-8.
#[derive(Debug, Default)]
pub(crate) struct LineSplitter {
    pending: Vec<u8>,
}

impl LineSplitter {
    pub(crate) fn push(&mut self, mut data: &[u8], out: &mut Vec<String>) {
        while !data.is_empty() {
            match data.iter().position(|&b| b == b'\n') {
                Some(i) => {
                    self.pending.extend_from_slice(&data[..i]);
                    data = &data[i + 1..];
                    self.flush_line(out);
                }
                None => {
                    self.pending.extend_from_slice(data);
                    data = &[];
                }
            }
            while self.pending.len() > MAX_LINE {
                let rest = self.pending.split_off(MAX_LINE);
                let line = std::mem::replace(&mut self.pending, rest);
                out.push(String::from_utf8_lossy(&line).into_owned());
            }
        }
    }

    fn flush_line(&mut self, out: &mut Vec<String>) {
        let mut line = std::mem::take(&mut self.pending);
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        out.push(String::from_utf8_lossy(&line).into_owned());
    }

    /// The unterminated last line, at end of stream.
    pub(crate) fn finish(&mut self, out: &mut Vec<String>) {
        if !self.pending.is_empty() {
            self.flush_line(out);
        }
    }
}

/// Bounds on a log store.
#[derive(Debug, Clone, Copy)]
pub struct LogLimits {
    /// Lines kept in memory.
    pub ring_lines: usize,
    /// Bytes written to the file before it stops growing.
    pub file_bytes: u64,
}

impl Default for LogLimits {
    fn default() -> Self {
        LogLimits {
            ring_lines: 2_000,
            file_bytes: 16 * 1024 * 1024,
        }
    }
}

#[derive(Debug, Clone)]
pub(crate) enum Event {
    Line(LogLine),
    Closed,
}

#[derive(Debug)]
struct Inner {
    ring: VecDeque<LogLine>,
    next_seq: u64,
    file: Option<File>,
    file_bytes: u64,
    /// The last sequence number written to the file (lines after it were dropped).
    file_last_seq: u64,
    truncated: bool,
    closed: bool,
}

/// One executable's output.
#[derive(Debug)]
pub struct LogStore {
    inner: Mutex<Inner>,
    tx: broadcast::Sender<Event>,
    path: Option<PathBuf>,
    limits: LogLimits,
}

impl LogStore {
    /// A store that also writes to `path` (created, mode 0600).
    pub(crate) fn new(path: Option<PathBuf>, limits: LogLimits) -> std::io::Result<Self> {
        let file = match &path {
            Some(p) => {
                use std::os::unix::fs::OpenOptionsExt as _;
                if let Some(dir) = p.parent() {
                    std::fs::create_dir_all(dir)?;
                }
                Some(
                    std::fs::OpenOptions::new()
                        .create(true)
                        .truncate(true)
                        .write(true)
                        .mode(0o600)
                        .open(p)?,
                )
            }
            None => None,
        };
        let (tx, _) = broadcast::channel(1024);
        Ok(LogStore {
            inner: Mutex::new(Inner {
                ring: VecDeque::new(),
                next_seq: 1,
                file,
                file_bytes: 0,
                file_last_seq: 0,
                truncated: false,
                closed: false,
            }),
            tx,
            path,
            limits,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        // A panic while holding the lock leaves consistent data (every field is updated
        // before the next), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn push(&self, channel: Channel, timestamp: Timestamp, line: String) {
        let mut g = self.lock();
        if g.closed {
            return;
        }
        let seq = g.next_seq;
        g.next_seq += 1;
        let entry = LogLine {
            seq,
            channel,
            timestamp,
            line,
        };
        if !g.truncated {
            // One line per record: "<nanos> <o|e> <text>"; the text has no newline.
            let rec = format!(
                "{} {} {}\n",
                timestamp.as_nanos(),
                channel.tag(),
                entry.line
            );
            if g.file_bytes + rec.len() as u64 > self.limits.file_bytes {
                g.truncated = true;
            } else if let Some(f) = g.file.as_mut() {
                if f.write_all(rec.as_bytes()).is_ok() {
                    g.file_bytes += rec.len() as u64;
                    g.file_last_seq = seq;
                } else {
                    g.truncated = true;
                }
            }
        }
        g.ring.push_back(entry.clone());
        while g.ring.len() > self.limits.ring_lines {
            g.ring.pop_front();
        }
        let _ = self.tx.send(Event::Line(entry));
    }

    /// No more lines will come (the executable's output ended).
    pub(crate) fn close(&self) {
        let mut g = self.lock();
        if !g.closed {
            g.closed = true;
            if let Some(f) = g.file.as_mut() {
                let _ = f.flush();
            }
            let _ = self.tx.send(Event::Closed);
        }
    }

    pub fn is_closed(&self) -> bool {
        self.lock().closed
    }

    /// Every line with a sequence number after `after`, from the ring, or from the file
    /// for lines the ring no longer holds.
    pub fn history(&self, after: u64) -> Vec<LogLine> {
        let g = self.lock();
        self.history_locked(&g, after)
    }

    fn history_locked(&self, g: &Inner, after: u64) -> Vec<LogLine> {
        let first_in_ring = g.ring.front().map_or(g.next_seq, |l| l.seq);
        let mut out = Vec::new();
        if after + 1 < first_in_ring {
            // Read what the ring dropped back from the file.
            if let Some(p) = &self.path {
                out.extend(read_file(p, after, first_in_ring.min(g.file_last_seq + 1)));
            }
        }
        out.extend(g.ring.iter().filter(|l| l.seq > after).cloned());
        out
    }

    /// The history, then (with `follow`) new lines until the output ends.
    pub fn subscribe(self: &Arc<Self>, follow: bool) -> Subscription {
        let g = self.lock();
        let history = self.history_locked(&g, 0);
        let rx = (follow && !g.closed).then(|| self.tx.subscribe());
        drop(g);
        let last = history.last().map_or(0, |l| l.seq);
        Subscription {
            store: self.clone(),
            pending: history.into(),
            rx,
            last,
        }
    }
}

/// Reads lines with `after < seq < before` back from a log file.
fn read_file(path: &Path, after: u64, before: u64) -> Vec<LogLine> {
    let Ok(f) = File::open(path) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, line) in BufReader::new(f).lines().enumerate() {
        let seq = i as u64 + 1;
        if seq >= before {
            break;
        }
        let Ok(line) = line else { break };
        if seq <= after {
            continue;
        }
        let mut parts = line.splitn(3, ' ');
        let (Some(ts), Some(tag), text) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        let (Ok(ts), Some(channel)) = (ts.parse::<u64>(), Channel::from_tag(tag)) else {
            continue;
        };
        out.push(LogLine {
            seq,
            channel,
            timestamp: Timestamp::from_nanos(ts),
            line: text.unwrap_or_default().to_owned(),
        });
    }
    out
}

/// A reader of one executable's output.
#[derive(Debug)]
pub struct Subscription {
    store: Arc<LogStore>,
    pending: VecDeque<LogLine>,
    rx: Option<broadcast::Receiver<Event>>,
    last: u64,
}

impl Subscription {
    /// The next line; `None` once the history is exhausted (without follow) or the
    /// output has ended (with follow).
    pub async fn next(&mut self) -> Option<LogLine> {
        loop {
            if let Some(l) = self.pending.pop_front() {
                self.last = l.seq;
                return Some(l);
            }
            let rx = self.rx.as_mut()?;
            match rx.recv().await {
                Ok(Event::Line(l)) if l.seq > self.last => {
                    self.last = l.seq;
                    return Some(l);
                }
                Ok(Event::Line(_)) => {}
                Ok(Event::Closed) | Err(broadcast::error::RecvError::Closed) => {
                    // Lines pushed before the close may still be in the store only if we
                    // lagged; pick them up, then end.
                    self.pending = self.store.history(self.last).into();
                    self.rx = None;
                }
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    // We fell behind the live feed: catch up from the ring or the file.
                    self.pending = self.store.history(self.last).into();
                }
            }
        }
    }
}

/// One line of the runtime's own log (Aurae's daemon log stream).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DaemonEvent {
    pub timestamp: Timestamp,
    pub line: String,
}

/// The runtime's own log: what it allocated, started, stopped and freed, and what went
/// wrong. A bounded ring plus live followers.
#[derive(Debug)]
pub struct EventLog {
    ring: Mutex<VecDeque<DaemonEvent>>,
    tx: broadcast::Sender<DaemonEvent>,
    capacity: usize,
}

impl EventLog {
    pub(crate) fn new(capacity: usize) -> Self {
        let (tx, _) = broadcast::channel(256);
        EventLog {
            ring: Mutex::new(VecDeque::new()),
            tx,
            capacity,
        }
    }

    pub(crate) fn record(&self, timestamp: Timestamp, line: String) {
        let e = DaemonEvent { timestamp, line };
        let mut ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        ring.push_back(e.clone());
        while ring.len() > self.capacity {
            ring.pop_front();
        }
        let _ = self.tx.send(e);
    }

    /// The recent history and a live feed, taken together.
    pub fn subscribe(&self) -> (Vec<DaemonEvent>, broadcast::Receiver<DaemonEvent>) {
        let ring = self.ring.lock().unwrap_or_else(|e| e.into_inner());
        (ring.iter().cloned().collect(), self.tx.subscribe())
    }
}

/// Output kept for a one-shot run: up to `limit` bytes, then a truncation mark.
#[derive(Debug, Default)]
pub(crate) struct Capture {
    pub(crate) bytes: Vec<u8>,
    pub(crate) truncated: bool,
    limit: usize,
}

impl Capture {
    pub(crate) fn new(limit: usize) -> Self {
        Capture {
            bytes: Vec::new(),
            truncated: false,
            limit,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        let room = self.limit.saturating_sub(self.bytes.len());
        if data.len() > room {
            self.truncated = true;
        }
        self.bytes.extend_from_slice(&data[..data.len().min(room)]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(chunks: &[&[u8]]) -> Vec<String> {
        let mut s = LineSplitter::default();
        let mut out = Vec::new();
        for c in chunks {
            s.push(c, &mut out);
        }
        s.finish(&mut out);
        out
    }

    #[test]
    fn lines_are_split_across_chunks() {
        assert_eq!(split(&[b"a\nb", b"c\n", b"d"]), ["a", "bc", "d"]);
        assert_eq!(split(&[b"crlf\r\n"]), ["crlf"]);
        assert_eq!(split(&[b"\n\n"]), ["", ""]);
        assert_eq!(split(&[b"\xff\xfe ok\n"]), ["\u{fffd}\u{fffd} ok"]);
        let long = vec![b'x'; MAX_LINE * 2 + 5];
        let out = split(&[&long]);
        assert_eq!(out.len(), 3);
        assert_eq!(out[0].len(), MAX_LINE);
        assert_eq!(out[2].len(), 5);
    }

    #[test]
    fn capture_is_bounded() {
        let mut c = Capture::new(5);
        c.push(b"abc");
        c.push(b"defg");
        assert_eq!(c.bytes, b"abcde");
        assert!(c.truncated);
    }

    fn ts(n: u64) -> Timestamp {
        Timestamp::from_nanos(n)
    }

    #[tokio::test]
    async fn a_late_subscriber_gets_history_then_follows() {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(LogStore::new(Some(dir.path().join("x.log")), LogLimits::default()).unwrap());
        store.push(Channel::Stdout, ts(1), "one".into());
        store.push(Channel::Stderr, ts(2), "two".into());
        let mut sub = store.subscribe(true);
        store.push(Channel::Stdout, ts(3), "three".into());
        store.close();
        let mut got = Vec::new();
        while let Some(l) = sub.next().await {
            got.push((l.seq, l.line));
        }
        assert_eq!(
            got,
            [
                (1, "one".into()),
                (2, "two".into()),
                (3, "three".to_string())
            ]
        );
        // Without follow: the history only.
        let mut sub = store.subscribe(false);
        let mut n = 0;
        while sub.next().await.is_some() {
            n += 1;
        }
        assert_eq!(n, 3);
    }

    #[tokio::test]
    async fn lines_dropped_from_the_ring_come_back_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            ring_lines: 3,
            file_bytes: 1 << 20,
        };
        let store = Arc::new(LogStore::new(Some(dir.path().join("x.log")), limits).unwrap());
        for i in 0..10 {
            store.push(Channel::Stdout, ts(i), format!("line {i}"));
        }
        store.close();
        let hist = store.history(0);
        assert_eq!(hist.len(), 10);
        assert_eq!(hist[0].line, "line 0");
        assert_eq!(hist[9].seq, 10);
        assert!(hist.windows(2).all(|w| w[0].seq + 1 == w[1].seq));
        assert_eq!(store.history(8).len(), 2);
    }

    #[tokio::test]
    async fn the_file_is_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let limits = LogLimits {
            ring_lines: 2,
            file_bytes: 100,
        };
        let store = LogStore::new(Some(dir.path().join("x.log")), limits).unwrap();
        for i in 0..50 {
            store.push(Channel::Stdout, ts(i), format!("line {i}"));
        }
        assert!(std::fs::metadata(dir.path().join("x.log")).unwrap().len() <= 100);
        // The ring still has the newest lines (sequence numbers start at 1).
        let seqs: Vec<u64> = store.history(48).iter().map(|l| l.seq).collect();
        assert_eq!(seqs, [49, 50]);
        assert_eq!(store.history(49).len(), 1);
    }

    #[tokio::test]
    async fn a_follower_that_lags_catches_up() {
        let store = Arc::new(
            LogStore::new(
                None,
                LogLimits {
                    ring_lines: 5_000,
                    file_bytes: 0,
                },
            )
            .unwrap(),
        );
        let mut sub = store.subscribe(true);
        // More than the broadcast channel holds, before the subscriber reads anything.
        for i in 0..3_000u64 {
            store.push(Channel::Stdout, ts(i), i.to_string());
        }
        store.close();
        let mut expect = 1;
        while let Some(l) = sub.next().await {
            assert_eq!(l.seq, expect);
            expect += 1;
        }
        assert_eq!(expect, 3_001);
    }
}
