//! The journal's daemon side: a cheap handle the DHCP, TFTP and HTTP code hand records to, and
//! one writer thread that applies them to the bounded model in memory
//! (`appliance_core::journal::Machines`) and appends them to `<state>/journal/journal.jsonl`.
//!
//! Nothing on a hot path waits for it: [`Journal::record`] puts the record in a bounded queue
//! with `try_send` and returns; when the queue is full (the writer is behind, a disk is slow)
//! the record is dropped and counted, never the request. The writer drains whatever is queued,
//! updates the model under its lock once per batch, writes the batch and flushes it, so the
//! file is at most one batch behind and a crash loses no more than that. Then it pauses
//! [`WRITE_INTERVAL`] before it waits again: while it pauses, a `try_send` finds no waiting
//! receiver to wake, so under load a request costs no system call and no thread switch for
//! its record, and the writer runs a few dozen times a second however many records come.
//!
//! Rotation is by size: when the file reaches `file_bytes` it becomes `journal.jsonl.1` (the
//! older ones move up one, the oldest beyond `keep` is removed) and a new file starts. At start
//! the newest lines of `journal.jsonl.1` and `journal.jsonl` are read back into the model, so
//! the status page survives a restart.

use appliance_core::journal::{parse_lines, Event, Limits, Machines, Record};
use appliance_core::mac::MacAddr;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// How long the writer pauses after a batch (see the module documentation): what the status
/// page shows is at most this much behind.
const WRITE_INTERVAL: Duration = Duration::from_millis(25);

/// The journal file's name in its directory.
pub const FILE_NAME: &str = "journal.jsonl";

/// How the journal runs (`--journal`, `--journal-machines`, …).
#[derive(Clone, Debug)]
pub struct JournalSettings {
    /// `false`: no record is made at all (`--journal off`).
    pub enabled: bool,
    pub limits: Limits,
    /// Where the file goes; `None`: memory only.
    pub dir: Option<PathBuf>,
    /// Size at which the file is rotated.
    pub file_bytes: u64,
    /// Rotated files kept besides the current one.
    pub keep: usize,
    /// Records that may wait for the writer before new ones are dropped.
    pub queue: usize,
}

impl Default for JournalSettings {
    fn default() -> Self {
        JournalSettings {
            enabled: true,
            limits: Limits::default(),
            dir: None,
            file_bytes: 4 << 20,
            keep: 3,
            queue: 65_536,
        }
    }
}

/// The handle: cloned into every task; all clones feed one writer.
#[derive(Clone, Default)]
pub struct Journal {
    inner: Option<Arc<Inner>>,
}

struct Inner {
    /// Boxed: the channel allocates all its slots at once, and a slot of a pointer keeps a
    /// deep queue cheap (65,536 records inline took some 27 MiB).
    tx: SyncSender<Box<Record>>,
    model: Arc<Mutex<Machines>>,
    dropped: AtomicU64,
    file: Option<PathBuf>,
    /// Called with the number of records dropped (the metrics counter).
    on_drop: Box<dyn Fn() + Send + Sync>,
}

/// Unix milliseconds now.
pub fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

impl Journal {
    /// No journal: every record is discarded before it is made.
    pub fn off() -> Journal {
        Journal { inner: None }
    }

    /// Loads the recent records of `settings.dir` and starts the writer thread. Blocking (it
    /// reads the files): async callers run it on the blocking pool.
    pub fn start(settings: &JournalSettings, on_drop: impl Fn() + Send + Sync + 'static) -> io::Result<Journal> {
        if !settings.enabled {
            return Ok(Journal::off());
        }
        let mut model = Machines::new(settings.limits);
        let mut writer = None;
        if let Some(dir) = &settings.dir {
            std::fs::create_dir_all(dir)?;
            let skipped = load_tail(dir, &mut model);
            if skipped > 0 {
                tracing::warn!(dir = %dir.display(), skipped, "journal: lines that do not read as records were skipped");
            }
            writer = Some(FileWriter::open(dir, settings.file_bytes, settings.keep)?);
        }
        let file = writer.as_ref().map(|w| w.path.clone());
        let model = Arc::new(Mutex::new(model));
        let (tx, rx) = sync_channel(settings.queue.max(1));
        let m = model.clone();
        std::thread::Builder::new().name("journal".into()).spawn(move || write_loop(rx, m, writer))?;
        Ok(Journal {
            inner: Some(Arc::new(Inner { tx, model, dropped: AtomicU64::new(0), file, on_drop: Box::new(on_drop) })),
        })
    }

    /// Whether records are kept: callers skip building one when not.
    pub fn enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// Queues a record made now. Never waits.
    pub fn record(&self, mac: Option<MacAddr>, ip: Option<Ipv4Addr>, event: Event) {
        let Some(inner) = &self.inner else { return };
        match inner.tx.try_send(Box::new(Record { at: now_ms(), mac, ip, event })) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                inner.dropped.fetch_add(1, Ordering::Relaxed);
                (inner.on_drop)();
            }
        }
    }

    /// Reads the model in memory, if there is one.
    pub fn read<R>(&self, f: impl FnOnce(&Machines) -> R) -> Option<R> {
        let inner = self.inner.as_ref()?;
        let m = inner.model.lock().unwrap_or_else(|e| e.into_inner());
        Some(f(&m))
    }

    pub fn dropped(&self) -> u64 {
        self.inner.as_ref().map_or(0, |i| i.dropped.load(Ordering::Relaxed))
    }

    /// The file records are appended to.
    pub fn file(&self) -> Option<&Path> {
        self.inner.as_ref()?.file.as_deref()
    }
}

/// Reads the rotated file and the current one (oldest first) into `model`; returns the lines
/// that did not parse.
fn load_tail(dir: &Path, model: &mut Machines) -> usize {
    let mut skipped = 0;
    for name in [format!("{FILE_NAME}.1"), FILE_NAME.to_string()] {
        let Ok(text) = std::fs::read_to_string(dir.join(&name)) else { continue };
        let (records, bad) = parse_lines(&text);
        skipped += bad;
        for r in records {
            model.push(r);
        }
    }
    skipped
}

fn write_loop(rx: Receiver<Box<Record>>, model: Arc<Mutex<Machines>>, mut writer: Option<FileWriter>) {
    let mut batch = Vec::new();
    // Ends when every handle is gone (the daemon stopped).
    while let Ok(first) = rx.recv() {
        batch.push(first);
        loop {
            match rx.try_recv() {
                Ok(r) if batch.len() < 4096 => batch.push(r),
                Ok(r) => {
                    batch.push(r);
                    break;
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        if let Some(w) = writer.as_mut() {
            if let Err(e) = w.append(&batch) {
                tracing::warn!(file = %w.path.display(), "journal: writing failed, records stay in memory only: {e}");
            }
        }
        {
            let mut m = model.lock().unwrap_or_else(|e| e.into_inner());
            for r in batch.drain(..) {
                m.push(*r);
            }
        }
        std::thread::sleep(WRITE_INTERVAL);
    }
}

/// The journal file, appended to and rotated by size.
struct FileWriter {
    path: PathBuf,
    out: BufWriter<File>,
    /// The line being encoded, reused.
    line: Vec<u8>,
    len: u64,
    limit: u64,
    keep: usize,
    /// A failed write is reported once until a write succeeds again.
    failing: bool,
}

impl FileWriter {
    fn open(dir: &Path, limit: u64, keep: usize) -> io::Result<FileWriter> {
        let path = dir.join(FILE_NAME);
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let len = file.metadata()?.len();
        Ok(FileWriter {
            path,
            out: BufWriter::with_capacity(1 << 16, file),
            line: Vec::with_capacity(1024),
            len,
            limit: limit.max(4096),
            keep,
            failing: false,
        })
    }

    fn append(&mut self, batch: &[Box<Record>]) -> io::Result<()> {
        let result = self.try_append(batch);
        match (&result, self.failing) {
            (Ok(()), _) => self.failing = false,
            (Err(_), true) => return Ok(()),
            (Err(_), false) => self.failing = true,
        }
        result
    }

    fn try_append(&mut self, batch: &[Box<Record>]) -> io::Result<()> {
        for r in batch {
            // One buffer for every line: no allocation per record once it has grown.
            self.line.clear();
            serde_json::to_writer(&mut self.line, r).map_err(io::Error::other)?;
            self.line.push(b'\n');
            self.out.write_all(&self.line)?;
            self.len += self.line.len() as u64;
        }
        self.out.flush()?;
        if self.len >= self.limit {
            self.rotate()?;
        }
        Ok(())
    }

    /// `journal.jsonl` → `.1` → `.2` …, dropping what would be beyond `keep`.
    fn rotate(&mut self) -> io::Result<()> {
        let numbered = |n: usize| self.path.with_file_name(format!("{FILE_NAME}.{n}"));
        if self.keep == 0 {
            std::fs::remove_file(&self.path)?;
        } else {
            let _ = std::fs::remove_file(numbered(self.keep));
            for n in (1..self.keep).rev() {
                let _ = std::fs::rename(numbered(n), numbered(n + 1));
            }
            std::fs::rename(&self.path, numbered(1))?;
        }
        let file = OpenOptions::new().create(true).append(true).open(&self.path)?;
        self.out = BufWriter::with_capacity(1 << 16, file);
        self.len = 0;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use appliance_core::journal::{Installer, Rearm};

    fn rearm() -> Event {
        Event::Rearm(Rearm { by: "test".into(), was_installed: false })
    }

    fn wait_for(j: &Journal, n: usize, mac: MacAddr) {
        for _ in 0..200 {
            if j.read(|m| m.timeline(mac).map_or(0, |t| t.len())).unwrap() >= n {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        panic!("the writer did not apply {n} records");
    }

    #[test]
    fn records_reach_the_model_and_the_file_and_come_back_after_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let settings = JournalSettings { dir: Some(dir.path().to_path_buf()), ..Default::default() };
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 1]);
        let j = Journal::start(&settings, || {}).unwrap();
        for _ in 0..3 {
            j.record(Some(mac), None, rearm());
        }
        wait_for(&j, 3, mac);
        let text = std::fs::read_to_string(dir.path().join(FILE_NAME)).unwrap();
        assert_eq!(text.lines().count(), 3, "{text}");
        drop(j);
        let again = Journal::start(&settings, || {}).unwrap();
        assert_eq!(again.read(|m| m.timeline(mac).unwrap().len()), Some(3));
    }

    #[test]
    fn the_file_rotates_by_size_and_keeps_so_many() {
        let dir = tempfile::tempdir().unwrap();
        let settings =
            JournalSettings { dir: Some(dir.path().to_path_buf()), file_bytes: 4096, keep: 2, ..Default::default() };
        let mac = MacAddr([0x52, 0x54, 0, 0, 0, 2]);
        let j = Journal::start(&settings, || {}).unwrap();
        let message = Some("x".repeat(900));
        for i in 0..40 {
            j.record(
                Some(mac),
                None,
                Event::Installer(Installer { event: None, message: message.clone(), status: 200, note: None }),
            );
            if i % 4 == 3 {
                wait_for(&j, i + 1, mac);
            }
        }
        wait_for(&j, 40, mac);
        let mut names: Vec<String> =
            std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        assert_eq!(names, ["journal.jsonl", "journal.jsonl.1", "journal.jsonl.2"]);
        for n in &names {
            let len = std::fs::metadata(dir.path().join(n)).unwrap().len();
            assert!(len < 4096 + 4 * 1024, "{n}: {len} bytes");
        }
    }

    #[test]
    fn a_full_queue_drops_and_counts_instead_of_waiting() {
        let (tx, _rx) = sync_channel(1);
        let drops = Arc::new(AtomicU64::new(0));
        let d = drops.clone();
        let j = Journal {
            inner: Some(Arc::new(Inner {
                tx,
                model: Arc::new(Mutex::new(Machines::new(Limits::default()))),
                dropped: AtomicU64::new(0),
                file: None,
                on_drop: Box::new(move || {
                    d.fetch_add(1, Ordering::Relaxed);
                }),
            })),
        };
        // Nobody reads: the first fits, the rest are dropped at once.
        for _ in 0..5 {
            j.record(None, None, rearm());
        }
        assert_eq!(j.dropped(), 4);
        assert_eq!(drops.load(Ordering::Relaxed), 4);
        assert!(!Journal::off().enabled());
    }
}

/// What a record costs in CPU, writer thread included: a measurement, not a check (`cargo
/// test --release -p appliance --lib journal_cost -- --ignored --nocapture`). Process CPU time
/// is little moved by other load on the machine, where the bench's throughput figures are.
#[cfg(test)]
mod cost {
    use super::*;
    use appliance_core::journal::{Decided, Http};

    fn cpu() -> Duration {
        let u = nix::sys::resource::getrusage(nix::sys::resource::UsageWho::RUSAGE_SELF).unwrap();
        let t = |tv: nix::sys::time::TimeVal| Duration::new(tv.tv_sec() as u64, tv.tv_usec() as u32 * 1000);
        t(u.user_time()) + t(u.system_time())
    }

    /// A script request's record, as `http::observe` makes it, for `mac`.
    fn script_record(mac: MacAddr, decided: &Decided) -> Event {
        Event::Http(Http {
            method: "GET".into(),
            path: format!("/ipxe/script?mac={mac}"),
            status: 200,
            bytes: 812,
            length: Some(812),
            duration_ms: 0,
            decision: Some(decided.clone()),
            note: None,
        })
    }

    #[test]
    #[ignore = "a measurement: run it with --release and --nocapture"]
    fn journal_cost_per_record() {
        let dir = tempfile::tempdir().unwrap();
        let decided = Decided {
            stage: "iPXE script".into(),
            outcome: "profile live version 0123456789ab".into(),
            hostname: "node-0042".into(),
            profile: Some("live".into()),
            version: Some("0123456789abcdef".into()),
            arch: Some("x86_64".into()),
            arch_rule: "exact MAC 52:54:00:12:34:56".into(),
            target_rule: "exact MAC 52:54:00:12:34:56".into(),
            ignored: None,
        };
        // Every record from a new machine (as in the bench's DHCP load), paced at about
        // 100,000 a second so that the writer keeps up and nothing is dropped.
        let n = 200_000u32;
        let mut per_record = Vec::new();
        for on in [false, true] {
            let settings = JournalSettings { enabled: on, dir: Some(dir.path().to_path_buf()), ..Default::default() };
            let j = Journal::start(&settings, || {}).unwrap();
            let before = cpu();
            for i in 0..n {
                let b = i.to_be_bytes();
                let mac = MacAddr([0x52, 0x54, b[0], b[1], b[2], b[3]]);
                if j.enabled() {
                    j.record(Some(mac), Some(Ipv4Addr::new(10, 0, b[2], b[3])), script_record(mac, &decided));
                }
                if i % 100 == 0 {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            // Let the writer finish its last batch before the clock stops.
            std::thread::sleep(Duration::from_millis(300));
            let used = cpu() - before;
            assert_eq!(j.dropped(), 0, "the writer fell behind: the figure would leave out dropped records");
            if on {
                assert_eq!(j.read(|m| m.len()), Some(Limits::default().machines), "records missing from the model");
            }
            per_record.push(used.as_secs_f64() * 1e6 / f64::from(n));
        }
        assert!(dir.path().join(format!("{FILE_NAME}.1")).exists(), "the file never reached its rotation size");
        eprintln!(
            "journal: {:.2} us CPU per record (off: {:.2} us for the same loop)",
            per_record[1] - per_record[0],
            per_record[0]
        );
    }
}
