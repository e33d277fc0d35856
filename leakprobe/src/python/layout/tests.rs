//! The layouts against the interpreters on this machine: the table's versions are recognised in their own
//! files, and 3.13's `_Py_DebugOffsets` (read from the initializer of `_PyRuntime` in libpython3.13) gives
//! the offsets its headers give (printed by a C program compiled against them, as the table's were).

use super::*;
use crate::python::elf::{PythonFile, examine};

fn examined(path: &str) -> PythonFile {
    let data = std::fs::read(path).unwrap_or_else(|err| panic!("{path}: {err}"));
    examine(&data, path)
        .unwrap_or_else(|err| panic!("{path}: {err}"))
        .unwrap_or_else(|| panic!("{path}: no _PyRuntime"))
}

const PYENV: &str = "/root/.pyenv/versions";

#[test]
fn debians_python_3_11_uses_the_table() {
    let file = examined("/usr/bin/python3.11");
    assert_eq!(file.layout, table(Version { major: 3, minor: 11 }).expect("in the table"));
    assert!(file.eval.end > file.eval.start);
}

#[test]
fn pyenv_interpreters_use_their_tables() {
    for (dir, minor) in [("3.10.13", 10), ("3.11.7", 11), ("3.12.1", 12)] {
        let file = examined(&format!("{PYENV}/{dir}/lib/libpython3.{minor}.so.1.0"));
        assert_eq!(file.layout.version, Version { major: 3, minor });
        assert_eq!(Some(file.layout), table(file.layout.version));
    }
}

#[test]
fn python_3_13_reads_its_debug_offsets() {
    let file = examined(&format!("{PYENV}/3.13.0/lib/libpython3.13.so.1.0"));
    let layout = file.layout;
    assert_eq!(layout.version, Version { major: 3, minor: 13 });
    let walk = layout.walk;
    assert_eq!(
        (walk.interpreters_head, walk.threads_head, walk.tstate_next, walk.tstate_native_thread_id, walk.tstate_frame),
        (632, 7344, 8, 160, 72)
    );
    assert_eq!((walk.frame_previous, walk.frame_code, walk.frame_instr, walk.frame_mark), (8, 0, 56, 70));
    assert_eq!(walk.cframe_current_frame, NO_FIELD);
    assert_eq!((walk.frame_window, walk.frame_window_len, walk.tstate_window, walk.tstate_window_len), (0, 71, 8, 160));
    let code = layout.code;
    assert_eq!(
        (code.filename, code.name, code.qualname, code.firstlineno, code.linetable),
        (112, 120, Some(128), 68, 136)
    );
    assert_eq!(code.instr, Instr::Pointer { code_adaptive: 200 });
    assert_eq!((code.ascii_size, code.compact_size, code.bytes_data), (40, 56, 32));
}

#[test]
fn debug_offsets_are_validated() {
    assert!(Layout::from_debug_offsets(&[0; 16]).is_err());
    let mut bytes = vec![0u8; DEBUG_OFFSETS_BYTES];
    assert_eq!(Layout::from_debug_offsets(&bytes), Err(LayoutError::DebugOffsets("no cookie")));
    bytes[..8].copy_from_slice(DEBUG_COOKIE);
    bytes[8..16].copy_from_slice(&0x030e_00f0_u64.to_le_bytes());
    assert_eq!(Layout::from_debug_offsets(&bytes), Err(LayoutError::Unsupported(Version { major: 3, minor: 14 })));
}

#[test]
fn the_tables_read_each_frame_and_thread_state_at_once() {
    // (frame window, thread-state window): start and length, each within `PY_WINDOW_BYTES`.
    for (minor, frame, tstate) in [(10, (24, 80), (0, 0)), (11, (32, 37), (8, 160)), (12, (0, 71), (8, 144))] {
        let walk = table(Version { major: 3, minor }).expect("in the table").walk;
        assert_eq!((walk.frame_window, walk.frame_window_len), frame, "3.{minor}");
        assert_eq!((walk.tstate_window, walk.tstate_window_len), tstate, "3.{minor}");
    }
}
