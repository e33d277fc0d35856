//! Resolved Python frames, interned once for the daemon's life: a stack carries a Python frame as a tagged
//! word (`PY_FRAME_TAG | id`) next to its native return addresses, so two call paths through the same C
//! frames are two stacks, and the same Python frame is the same word whatever its code object's address.
//! The symbolizer turns the word back into a frame. Bounded: past [`MAX_NAMES`] every new frame is one
//! "unresolved" word (counted).
//!
//! One table, shared by the ingest task (writer) and the symbolizer thread (reader), behind one lock: both
//! touch it per Python frame, for a hash look-up.

use std::{
    collections::HashMap,
    sync::{Mutex, OnceLock},
};

/// High bits of a stack word that is a Python frame: no user-space address has them.
pub const PY_FRAME_TAG: u64 = 0xfd00_0000_0000_0000;
const TAG_MASK: u64 = 0xffff_ffff_0000_0000;
/// Distinct resolved frames kept.
pub const MAX_NAMES: usize = 1 << 20;

/// A Python frame as shown.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PyFrameName {
    pub function: String,
    pub file: String,
    pub line: Option<u32>,
}

#[derive(Default)]
struct Table {
    ids: HashMap<PyFrameName, u32>,
    names: Vec<PyFrameName>,
    overflowed: u64,
}

fn table() -> &'static Mutex<Table> {
    static TABLE: OnceLock<Mutex<Table>> = OnceLock::new();
    TABLE.get_or_init(|| {
        let unknown = PyFrameName { function: "<unresolved Python frame>".into(), file: String::new(), line: None };
        Mutex::new(Table { ids: HashMap::from([(unknown.clone(), 0)]), names: vec![unknown], overflowed: 0 })
    })
}

/// The stack word of `name`.
pub fn intern(name: PyFrameName) -> u64 {
    let Ok(mut table) = table().lock() else { return PY_FRAME_TAG };
    if let Some(&id) = table.ids.get(&name) {
        return PY_FRAME_TAG | u64::from(id);
    }
    let Ok(id) = u32::try_from(table.names.len()) else { return PY_FRAME_TAG };
    if table.names.len() >= MAX_NAMES {
        table.overflowed += 1;
        return PY_FRAME_TAG;
    }
    table.names.push(name.clone());
    table.ids.insert(name, id);
    PY_FRAME_TAG | u64::from(id)
}

/// Whether a stack word is a Python frame.
pub const fn is_python(word: u64) -> bool {
    word & TAG_MASK == PY_FRAME_TAG
}

/// The frame a Python stack word stands for.
pub fn lookup(word: u64) -> Option<PyFrameName> {
    if !is_python(word) {
        return None;
    }
    let table = table().lock().ok()?;
    table.names.get(usize::try_from(word & !TAG_MASK).ok()?).cloned()
}

/// Frames interned, and frames not interned because the table was full.
pub fn counts() -> (u64, u64) {
    table().lock().map_or((0, 0), |t| (t.names.len() as u64, t.overflowed))
}

/// Symbolizes a stack whose words may be Python frames: the native ones by `native` (in order, as one
/// stack), the Python ones from the table.
pub fn symbolize_mixed(
    words: &[u64],
    native: impl FnOnce(Vec<u64>) -> Vec<crate::protocol::Frame>,
) -> Vec<crate::protocol::Frame> {
    let natives: Vec<u64> = words.iter().copied().filter(|&w| !is_python(w)).collect();
    let mut resolved = native(natives).into_iter();
    words
        .iter()
        .map(|&word| match lookup(word) {
            Some(name) => crate::protocol::Frame {
                addr: crate::protocol::hex_addr(word),
                function: Some(name.function),
                file: Some(name.file),
                line: name.line,
                module: Some("python".into()),
            },
            None if is_python(word) => {
                crate::protocol::Frame { addr: crate::protocol::hex_addr(word), ..Default::default() }
            }
            None => resolved.next().unwrap_or_else(|| crate::protocol::Frame {
                addr: crate::protocol::hex_addr(word),
                ..Default::default()
            }),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_frame_same_word() {
        let name = PyFrameName { function: "leak".into(), file: "/tmp/names_test.py".into(), line: Some(3) };
        let word = intern(name.clone());
        assert!(is_python(word));
        assert_eq!(intern(name.clone()), word);
        assert_eq!(lookup(word), Some(name.clone()));
        let other = intern(PyFrameName { line: Some(4), ..name });
        assert_ne!(other, word);
        assert!(!is_python(0x7f00_0000_1234));
        assert_eq!(lookup(0x7f00_0000_1234), None);
    }
}
