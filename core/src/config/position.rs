//! Where each field of a YAML document sits: an index from field path to line and column,
//! built from the YAML event stream, so that errors found after deserialisation (a machine
//! naming a missing profile) can still point at the line an operator has to fix.

use std::collections::HashMap;
use yaml_rust2::parser::{Event, MarkedEventReceiver, Parser};
use yaml_rust2::scanner::Marker;

/// Appends a mapping key to a field path, quoting keys that are not plain words.
pub fn key(path: &str, key: &str) -> String {
    let plain = !key.is_empty() && key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
    let key = if plain { key.to_string() } else { format!("{key:?}") };
    if path.is_empty() {
        key
    } else {
        format!("{path}.{key}")
    }
}

/// Appends a sequence index to a field path.
pub fn index(path: &str, i: usize) -> String {
    format!("{path}[{i}]")
}

#[derive(Debug, Default, Clone)]
pub struct PosIndex {
    positions: HashMap<String, (usize, usize)>,
    duplicates: Vec<Duplicate>,
}

/// A mapping key written a second time: where, and where it was first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Duplicate {
    pub path: String,
    pub at: (usize, usize),
    pub first: (usize, usize),
}

impl PosIndex {
    /// Indexes a document; a document that does not parse gives an empty index (the parse
    /// error itself is reported by serde with its own position).
    pub fn build(text: &str) -> PosIndex {
        let mut b = Builder::default();
        let mut parser = Parser::new_from_str(text);
        let _ = parser.load(&mut b, false);
        PosIndex { positions: b.positions, duplicates: b.duplicates }
    }

    /// Keys written twice in one mapping, in document order. serde_yaml refuses such a
    /// document too, but without the position of the second key; this index has it.
    pub fn duplicates(&self) -> &[Duplicate] {
        &self.duplicates
    }

    /// Line and column (both 1-based) of `path`, or of its nearest indexed ancestor.
    pub fn at(&self, path: &str) -> (usize, usize) {
        let mut p = path;
        loop {
            if let Some(pos) = self.positions.get(p) {
                return *pos;
            }
            match p.rfind(['.', '[']) {
                Some(i) => p = &p[..i],
                None => return self.positions.get("").copied().unwrap_or((1, 1)),
            }
        }
    }
}

enum Frame {
    Map { path: String, key: Option<String> },
    Seq { path: String, next: usize },
}

#[derive(Default)]
struct Builder {
    stack: Vec<Frame>,
    positions: HashMap<String, (usize, usize)>,
    duplicates: Vec<Duplicate>,
}

impl Builder {
    fn record(&mut self, path: String, mark: Marker) {
        self.positions.entry(path).or_insert((mark.line(), mark.col() + 1));
    }

    /// Records a mapping key; a path already indexed is that key a second time (a path names
    /// one node, and sequence items are numbered). `<<` merge keys may repeat.
    fn record_key(&mut self, path: String, value: &str, mark: Marker) {
        let at = (mark.line(), mark.col() + 1);
        match self.positions.get(&path) {
            Some(&first) if value != "<<" => self.duplicates.push(Duplicate { path, at, first }),
            Some(_) => {}
            None => {
                self.positions.insert(path, at);
            }
        }
    }

    /// The path of a value starting now, advancing the parent's state. `None` when the
    /// value is a mapping key.
    fn value_path(&mut self, mark: Marker) -> Option<String> {
        match self.stack.last_mut() {
            None => Some(String::new()),
            Some(Frame::Map { key: None, .. }) => None,
            Some(Frame::Map { path, key }) => {
                let k = key.take().unwrap_or_default();
                Some(self::key(path, &k))
            }
            Some(Frame::Seq { path, next }) => {
                let p = index(path, *next);
                *next += 1;
                self.record(p.clone(), mark);
                Some(p)
            }
        }
    }
}

impl MarkedEventReceiver for Builder {
    fn on_event(&mut self, ev: Event, mark: Marker) {
        match ev {
            Event::Scalar(value, ..) if self.value_path(mark).is_none() => {
                if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                    let p = self::key(path, &value);
                    *key = Some(value.clone());
                    self.record_key(p, &value, mark);
                }
            }
            Event::Alias(_) => {
                self.value_path(mark);
            }
            Event::MappingStart(..) | Event::SequenceStart(..) => {
                let is_map = matches!(ev, Event::MappingStart(..));
                // A complex (non-scalar) key gets a placeholder name.
                let path = match self.value_path(mark) {
                    Some(p) => p,
                    None => {
                        if let Some(Frame::Map { path, key }) = self.stack.last_mut() {
                            *key = Some("<complex key>".into());
                            format!("{path}.<complex key>")
                        } else {
                            String::new()
                        }
                    }
                };
                if path.is_empty() {
                    self.record(String::new(), mark);
                }
                self.stack.push(if is_map { Frame::Map { path, key: None } } else { Frame::Seq { path, next: 0 } });
            }
            Event::MappingEnd | Event::SequenceEnd => {
                self.stack.pop();
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn indexes_keys_and_items() {
        let text = "a: 1\nmachines:\n  \"52:54:00:12:34:56\":\n    profile: x\nlist:\n  - one\n  - { k: v }\n";
        let idx = PosIndex::build(text);
        assert_eq!(idx.at("a"), (1, 1));
        assert_eq!(idx.at("machines"), (2, 1));
        assert_eq!(idx.at("machines.\"52:54:00:12:34:56\""), (3, 3));
        assert_eq!(idx.at("machines.\"52:54:00:12:34:56\".profile"), (4, 5));
        assert_eq!(idx.at("list[0]"), (6, 5));
        assert_eq!(idx.at("list[1].k"), (7, 7));
        // A field that does not exist points at its nearest ancestor.
        assert_eq!(idx.at("machines.\"52:54:00:12:34:56\".hostname"), (3, 3));
        assert_eq!(idx.duplicates(), []);
    }

    #[test]
    fn finds_keys_written_twice() {
        let idx = PosIndex::build("a: 1\nm:\n  x: 1\n  y: 2\n  x: 3\na: 4\nl: [{ k: 1 }, { k: 2 }]\n");
        let found: Vec<_> = idx.duplicates().iter().map(|d| (d.path.as_str(), d.at, d.first)).collect();
        assert_eq!(found, [("m.x", (5, 3), (3, 3)), ("a", (6, 1), (1, 1))]);
    }
}
