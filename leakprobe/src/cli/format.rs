//! Human output: sizes, frames, tables.

use comfy_table::{Table, presets};
use humansize::{BINARY, format_size};

use crate::protocol::Frame;

/// `10240` -> `10 KiB`.
pub fn size(bytes: u64) -> String {
    format_size(bytes, BINARY)
}

/// `leak_alpha (leaker.c:12)`, or the address when nothing is known.
pub fn frame(frame: &Frame) -> String {
    let name = frame.function.as_deref().unwrap_or(&frame.addr);
    match (&frame.file, frame.line) {
        (Some(file), Some(line)) => {
            let short = file.rsplit('/').next().unwrap_or(file);
            format!("{name} ({short}:{line})")
        }
        _ => match &frame.module {
            Some(module) if frame.function.is_none() => {
                format!("{name} in {}", module.rsplit('/').next().unwrap_or(module))
            }
            _ => name.to_owned(),
        },
    }
}

/// A table in the style of `ps`: no borders, a header row.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_preset(presets::NOTHING).set_header(header.iter().copied());
    table
}

/// Prints a value as pretty JSON.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_human() {
        assert_eq!(size(10_000), "9.77 KiB");
        assert_eq!(size(512), "512 B");
    }

    #[test]
    fn frames_show_what_is_known() {
        let mut f = Frame { addr: "0x10".into(), ..Frame::default() };
        assert_eq!(frame(&f), "0x10");
        f.module = Some("/usr/lib/libc.so.6".into());
        assert_eq!(frame(&f), "0x10 in libc.so.6");
        f.function = Some("leak".into());
        assert_eq!(frame(&f), "leak");
        f.file = Some("/src/leaker.c".into());
        f.line = Some(12);
        assert_eq!(frame(&f), "leak (leaker.c:12)");
    }
}
