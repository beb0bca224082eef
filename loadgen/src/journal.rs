//! The journal of accepted messages: one line per `accepted` answer, written and fsynced by a
//! thread of its own, so that what loadgen was told is durable before a crash harness counts
//! on it, independently of loadgen's memory.
//!
//! Each line is `ID SENDER TO SEQ`: the message id (32 hex digits), and the stamp that names
//! the message in the run (sending device, recipient user or `line`, the sender's number for
//! that recipient). A batch of lines is fsynced (`fdatasync`) as soon as it is written; the
//! lines that arrive meanwhile form the next batch.

use std::{
    fs::File,
    io::{BufWriter, Write},
    path::Path,
    sync::{
        Mutex,
        atomic::{AtomicU64, Ordering},
        mpsc,
    },
    thread::JoinHandle,
};

use crate::check::{LINE, Stamp};

/// An open journal.
pub(crate) struct Journal {
    lines: Mutex<Option<mpsc::Sender<String>>>,
    writer: Mutex<Option<JoinHandle<std::io::Result<()>>>>,
    written: AtomicU64,
}

impl Journal {
    /// Creates (or truncates) the journal at `path` and starts its writer thread.
    pub(crate) fn create(path: &Path) -> std::io::Result<Self> {
        let file = File::create(path)?;
        let (tx, rx) = mpsc::channel::<String>();
        let writer = std::thread::Builder::new().name("journal".into()).spawn(move || {
            let mut out = BufWriter::new(file);
            while let Ok(first) = rx.recv() {
                out.write_all(first.as_bytes())?;
                while let Ok(more) = rx.try_recv() {
                    out.write_all(more.as_bytes())?;
                }
                out.flush()?;
                out.get_ref().sync_data()?;
            }
            out.flush()?;
            out.get_ref().sync_data()
        })?;
        Ok(Self {
            lines: Mutex::new(Some(tx)),
            writer: Mutex::new(Some(writer)),
            written: AtomicU64::new(0),
        })
    }

    /// Records that the message `id` (stamped `stamp`) was accepted.
    pub(crate) fn accepted(&self, id: u128, stamp: Stamp) {
        let to = match stamp.to {
            LINE => "line".to_string(),
            user => user.to_string(),
        };
        let line = format!("{id:032x} {} {to} {}\n", stamp.sender, stamp.seq);
        if let Some(lines) = &*self.lines.lock().expect("journal lock")
            && lines.send(line).is_ok()
        {
            self.written.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Lines handed to the writer.
    pub(crate) fn written(&self) -> u64 {
        self.written.load(Ordering::Relaxed)
    }

    /// Writes and fsyncs what is left, and stops the writer.
    pub(crate) fn close(&self) -> std::io::Result<()> {
        self.lines.lock().expect("journal lock").take();
        match self.writer.lock().expect("journal lock").take() {
            Some(writer) => {
                writer.join().map_err(|_| std::io::Error::other("the journal writer panicked"))?
            }
            None => Ok(()),
        }
    }
}

/// One journal line read back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct JournalEntry {
    /// The message id.
    pub id: u128,
    /// The sending device.
    pub sender: u32,
    /// The recipient user, or [`LINE`].
    pub to: u32,
    /// The sender's number for that recipient.
    pub seq: u64,
}

/// Reads a journal back; a torn last line (a crash while writing) is left out.
pub fn read_journal(path: &Path) -> std::io::Result<Vec<JournalEntry>> {
    let text = std::fs::read_to_string(path)?;
    let mut entries = Vec::new();
    for line in text.split_inclusive('\n').filter(|l| l.ends_with('\n')) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let parsed = (|| {
            let [id, sender, to, seq] = fields.as_slice() else { return None };
            Some(JournalEntry {
                id: u128::from_str_radix(id, 16).ok()?,
                sender: sender.parse().ok()?,
                to: if *to == "line" { LINE } else { to.parse().ok()? },
                seq: seq.parse().ok()?,
            })
        })();
        let entry = parsed.ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("bad journal line {line:?}"),
            )
        })?;
        entries.push(entry);
    }
    Ok(entries)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_journal_reads_back_what_was_written_and_leaves_out_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("journal");
        let journal = Journal::create(&path).unwrap();
        journal.accepted(7, Stamp { sender: 3, to: 9, seq: 1, intended_ns: 0 });
        journal.accepted(u128::MAX, Stamp { sender: 4, to: LINE, seq: 2, intended_ns: 0 });
        journal.close().unwrap();
        assert_eq!(journal.written(), 2);
        // A crash in the middle of a line.
        let mut text = std::fs::read_to_string(&path).unwrap();
        text.push_str("0000000000000000000000000000000a 5 1");
        std::fs::write(&path, text).unwrap();
        assert_eq!(
            read_journal(&path).unwrap(),
            [
                JournalEntry { id: 7, sender: 3, to: 9, seq: 1 },
                JournalEntry { id: u128::MAX, sender: 4, to: LINE, seq: 2 },
            ]
        );
        std::fs::write(&path, "not a journal line\n").unwrap();
        assert!(read_journal(&path).is_err());
    }
}
