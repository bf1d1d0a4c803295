//! The log writer: each thread appends its formatted lines to a buffer of its own, and one
//! background thread writes every buffer to stderr in batches: every `FLUSH_EVERY` for access
//! lines, at once for any other line (a warning, a health change: rare, and wanted now), and
//! once more at exit. A request never waits on the terminal, a pipe or journald, and never pays
//! for a `write`, an allocation or a channel send per line.
//!
//! By hand rather than `tracing_appender::non_blocking`: that one copies each line into a new
//! allocation and sends it over a channel to its thread (which frees it), and with the access
//! log on it took 13% of the requests a core serves (benches/cpu-per-request.sh, README
//! "Access log"). Lines from one thread keep their order; lines of two threads may interleave
//! out of time order within one batch.

use std::io::{self, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

use tracing_subscriber::fmt::MakeWriter;
use turnout_config::LogFormat;

/// How long a line waits at most before it is written.
const FLUSH_EVERY: Duration = Duration::from_millis(20);

/// What one thread may hold unwritten; lines beyond it are dropped (and counted) rather than
/// let memory grow while stderr is blocked.
const MAX_PENDING: usize = 4 * 1024 * 1024;

type Buffer = Arc<Mutex<Vec<u8>>>;

struct Shared {
    /// This writer's number in the process (several may exist: tests start turnout twice).
    id: u64,
    /// stderr, but in tests.
    sink: Mutex<Box<dyn Write + Send>>,
    /// Every thread's buffer, registered at its first line.
    buffers: Mutex<Vec<Buffer>>,
    dropped: AtomicU64,
    closed: Mutex<bool>,
    wake: Condvar,
    /// A line that should not wait for the next round is pending.
    urgent: AtomicBool,
}

thread_local! {
    /// This thread's buffer in each writer it has written to (one, but for tests), by writer.
    static MINE: std::cell::RefCell<Vec<(u64, Buffer)>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Numbers the writers of this process.
static WRITERS: AtomicU64 = AtomicU64::new(0);

/// The writer given to `tracing_subscriber::fmt`.
#[derive(Clone)]
pub struct Batched {
    shared: Arc<Shared>,
}

/// Writes what is left when dropped (at the end of `main`).
pub struct FlushGuard {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

/// The writer (to stderr), and the guard that writes the last lines at exit.
pub fn batched() -> (Batched, FlushGuard) {
    batched_to(Box::new(io::stderr()))
}

fn batched_to(sink: Box<dyn Write + Send>) -> (Batched, FlushGuard) {
    let shared = Arc::new(Shared {
        id: WRITERS.fetch_add(1, Ordering::Relaxed),
        sink: Mutex::new(sink),
        buffers: Mutex::default(),
        dropped: AtomicU64::new(0),
        closed: Mutex::new(false),
        wake: Condvar::new(),
        urgent: AtomicBool::new(false),
    });
    let background = Arc::clone(&shared);
    let thread = std::thread::Builder::new()
        .name("turnout-log".into())
        .spawn(move || {
            let mut closed = background
                .closed
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            while !*closed {
                // A wake-up that comes between this check and the wait is seen one round late.
                if !background.urgent.swap(false, Ordering::Relaxed) {
                    closed = background
                        .wake
                        .wait_timeout(closed, FLUSH_EVERY)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
                drop(closed);
                flush(&background);
                closed = background
                    .closed
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
            }
        })
        .ok();
    (
        Batched {
            shared: Arc::clone(&shared),
        },
        FlushGuard { shared, thread },
    )
}

/// Writes every thread's pending lines; forgets the buffers of threads that have ended.
fn flush(shared: &Shared) {
    let mut out = Vec::new();
    {
        let mut buffers = shared
            .buffers
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for buffer in buffers.iter() {
            let mut pending = buffer.lock().unwrap_or_else(PoisonError::into_inner);
            out.extend_from_slice(&pending);
            pending.clear();
        }
        // A thread that has ended holds its buffer no more: forget the buffer once it is empty
        // (its thread may have written more after it was copied above, and ended since).
        buffers.retain(|b| {
            Arc::strong_count(b) > 1 || !b.lock().unwrap_or_else(PoisonError::into_inner).is_empty()
        });
    }
    let dropped = shared.dropped.swap(0, Ordering::Relaxed);
    if dropped > 0 {
        let _ = writeln!(
            out,
            "turnout: {dropped} log lines dropped: stderr did not take them fast enough"
        );
    }
    if !out.is_empty() {
        let mut sink = shared.sink.lock().unwrap_or_else(PoisonError::into_inner);
        let _ = sink.write_all(&out);
        let _ = sink.flush();
    }
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        *self
            .shared
            .closed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = true;
        self.shared.wake.notify_all();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        flush(&self.shared);
    }
}

/// One line's writer: appends to the calling thread's buffer; an urgent line wakes the writer.
pub struct Line<'a> {
    shared: &'a Shared,
    urgent: bool,
}

impl Shared {
    /// Appends what `fill` writes to this thread's buffer (registered at its first line), or
    /// drops it (counted) when it would take the buffer over `MAX_PENDING`.
    fn append(&self, fill: &mut dyn FnMut(&mut Vec<u8>)) {
        MINE.with(|mine| {
            let mut mine = mine.borrow_mut();
            let buffer = match mine.iter().position(|(id, _)| *id == self.id) {
                Some(i) => &mine[i].1,
                None => {
                    // A writer that is gone holds its buffers no more: forget them here.
                    mine.retain(|(_, b)| Arc::strong_count(b) > 1);
                    let buffer = Buffer::default();
                    self.buffers
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .push(Arc::clone(&buffer));
                    mine.push((self.id, buffer));
                    &mine[mine.len() - 1].1
                }
            };
            // Uncontended but for the writer thread's swap every FLUSH_EVERY.
            let mut pending = buffer.lock().unwrap_or_else(PoisonError::into_inner);
            // Never over MAX_PENDING after a line: one that would take it over is taken back
            // whole, and the room it grew is given back.
            let before = pending.len();
            fill(&mut pending);
            if pending.len() > MAX_PENDING {
                pending.truncate(before);
                pending.shrink_to(MAX_PENDING);
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        });
    }
}

impl Write for Line<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.shared
            .append(&mut |pending| pending.extend_from_slice(buf));
        if self.urgent {
            self.shared.urgent.store(true, Ordering::Relaxed);
            self.shared.wake.notify_one();
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// Access lines, formatted by the data plane straight into this thread's buffer, wait for the
/// next round like any access line.
impl turnout_proxy::AccessSink for Batched {
    fn append(&self, fill: &mut dyn FnMut(&mut Vec<u8>)) {
        self.shared.append(fill);
    }
}

impl<'a> MakeWriter<'a> for Batched {
    type Writer = Line<'a>;

    fn make_writer(&'a self) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: true,
        }
    }

    /// Access lines wait for the next round; every other line goes out at once.
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Line<'a> {
        Line {
            shared: &self.shared,
            urgent: meta.target() != "turnout::access",
        }
    }
}

/// Logs to stderr through this module's background writer, so a slow terminal or pipe never
/// stalls a request; access lines come to it formatted by the data plane (`turnout_proxy`'s
/// `AccessSink`), everything else through `tracing_subscriber::fmt`, both in `format` (`[log]
/// format`: key=value text, or one JSON object per line). Filter with RUST_LOG (default `info`;
/// `RUST_LOG=info,turnout::access=off` drops the access log). The guard writes the last lines.
pub fn init(format: LogFormat) -> FlushGuard {
    let (writer, guard) = batched();
    turnout_proxy::set_access_sink(Box::new(writer.clone()), format);
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => fmt
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
        // The event's fields beside timestamp, level and target (not under "fields"), as the
        // access line has them; turnout's lines carry what they need in their own fields.
        LogFormat::Json => fmt
            .json()
            .flatten_event(true)
            .with_current_span(false)
            .with_span_list(false)
            .init(),
    }
    guard
}

impl std::fmt::Debug for Batched {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batched").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for FlushGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FlushGuard").finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Line<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Line")
            .field("urgent", &self.urgent)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sink the test can read after the writer is done with it.
    #[derive(Clone, Default)]
    struct Shelf(Arc<Mutex<Vec<u8>>>);

    impl Write for Shelf {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// Lines written from several threads all come out once each, in order per thread, by the
    /// time the guard is dropped, and the buffers of ended threads are forgotten.
    #[test]
    fn every_line_is_written_once_in_order_per_thread() {
        let shelf = Shelf::default();
        let (writer, guard) = batched_to(Box::new(shelf.clone()));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let writer = writer.clone();
                std::thread::spawn(move || {
                    for i in 0..1000 {
                        let mut line = writer.make_writer();
                        line.write_all(format!("t{t} {i}\n").as_bytes())
                            .expect("write");
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        drop(guard);
        let text = String::from_utf8(shelf.0.lock().expect("lock").clone()).expect("utf-8");
        assert_eq!(text.lines().count(), 4000);
        for t in 0..4 {
            let prefix = format!("t{t} ");
            let mine: Vec<usize> = text
                .lines()
                .filter_map(|l| l.strip_prefix(&prefix))
                .map(|n| n.parse().expect("number"))
                .collect();
            assert_eq!(mine, (0..1000).collect::<Vec<_>>(), "thread {t}");
        }
        assert!(writer.shared.buffers.lock().expect("lock").is_empty());
    }

    /// Lines given as a fill (the data plane's access lines) land in order with written ones;
    /// a thread over `MAX_PENDING` drops the line whole, never a part of it, and counts it.
    #[test]
    fn filled_lines_are_whole_and_a_full_buffer_drops_whole_lines() {
        use turnout_proxy::AccessSink;
        let shelf = Shelf::default();
        let (writer, guard) = batched_to(Box::new(shelf.clone()));
        writer.make_writer().write_all(b"first\n").expect("write");
        writer.append(&mut |out| out.extend_from_slice(b"second\n"));
        // Over the bound at once: dropped whole.
        writer.append(&mut |out| out.resize(out.len() + MAX_PENDING + 1, b'x'));
        {
            // The room the dropped line grew is given back.
            let buffers = writer.shared.buffers.lock().expect("lock");
            let capacity = buffers[0].lock().expect("lock").capacity();
            assert!(capacity <= MAX_PENDING, "{capacity}");
        }
        writer.append(&mut |out| out.extend_from_slice(b"third\n"));
        drop(guard);
        let text = String::from_utf8(shelf.0.lock().expect("lock").clone()).expect("utf-8");
        // The background thread may flush between any two lines: the count comes with the
        // flush after the drop, the lines in their order around it.
        let (notes, lines): (Vec<&str>, Vec<&str>) =
            text.lines().partition(|l| l.starts_with("turnout: "));
        assert_eq!(lines, ["first", "second", "third"], "{text}");
        assert_eq!(
            notes,
            ["turnout: 1 log lines dropped: stderr did not take them fast enough"]
        );
    }

    /// Two writers in one process (as when a test starts turnout twice): each thread's lines
    /// go to the writer they were written to, never to the other's sink.
    #[test]
    fn two_writers_in_one_process_keep_their_lines_apart() {
        let (first_shelf, second_shelf) = (Shelf::default(), Shelf::default());
        let (first, first_guard) = batched_to(Box::new(first_shelf.clone()));
        let (second, second_guard) = batched_to(Box::new(second_shelf.clone()));
        for i in 0..100 {
            first
                .make_writer()
                .write_all(format!("first {i}\n").as_bytes())
                .expect("write");
            second
                .make_writer()
                .write_all(format!("second {i}\n").as_bytes())
                .expect("write");
        }
        drop(first_guard);
        drop(first);
        // A writer made after one is gone: this thread writes to it, not to the old buffer.
        let third_shelf = Shelf::default();
        let (third, third_guard) = batched_to(Box::new(third_shelf.clone()));
        third.make_writer().write_all(b"third\n").expect("write");
        drop(second_guard);
        drop(third_guard);
        let text = |s: &Shelf| String::from_utf8(s.0.lock().expect("lock").clone()).expect("utf-8");
        let (a, b, c) = (text(&first_shelf), text(&second_shelf), text(&third_shelf));
        assert_eq!(a.lines().count(), 100);
        assert!(a.lines().all(|l| l.starts_with("first ")), "{a}");
        assert_eq!(b.lines().count(), 100);
        assert!(b.lines().all(|l| l.starts_with("second ")), "{b}");
        assert_eq!(c, "third\n");
    }
}
