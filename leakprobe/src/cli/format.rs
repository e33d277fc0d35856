//! Human output: sizes, frames, tables.

use comfy_table::{Table, presets};
use humansize::{BINARY, format_size};

use crate::{
    core::analysis::Verdict,
    protocol::{Frame, FrozenReport},
};

/// `10240` -> `10 KiB`.
pub fn size(bytes: u64) -> String {
    format_size(bytes, BINARY)
}

/// A growth rate for people: `1.20 MiB/min`, `-3 KiB/h`; per second from 1 MiB/s up.
pub fn rate(bytes_per_second: f64) -> String {
    let magnitude = bytes_per_second.abs();
    let (value, unit) = if magnitude >= 1024.0 * 1024.0 {
        (magnitude, "s")
    } else if magnitude * 60.0 >= 1024.0 {
        (magnitude * 60.0, "min")
    } else {
        (magnitude * 3600.0, "h")
    };
    let sign = if bytes_per_second < 0.0 && value >= 0.5 { "-" } else { "" };
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a rounded, non-negative rate")]
    let bytes = value.round() as u64;
    format!("{sign}{}/{unit}", size(bytes))
}

/// An age for people: `42s`, `5m 3s`, `2h 1m`.
pub fn age(seconds: Option<f64>) -> String {
    let Some(seconds) = seconds else { return "-".into() };
    #[expect(clippy::cast_possible_truncation, clippy::cast_sign_loss, reason = "a rounded, non-negative age")]
    let whole = std::time::Duration::from_secs(seconds.max(0.0).round() as u64);
    let text = humantime::format_duration(whole).to_string();
    // Keep the two largest units.
    text.split(' ').take(2).collect::<Vec<_>>().join(" ")
}

/// A stack's first `depth` frames, one per line, for a table cell; what is left out is counted.
pub fn stack_cell(stack: &[Frame], depth: usize) -> String {
    let mut frames: Vec<String> = stack.iter().take(depth).map(frame).collect();
    if stack.len() > depth {
        frames.push(format!("... {} more", stack.len() - depth));
    }
    if frames.is_empty() {
        frames.push("(no stack)".into());
    }
    frames.join("\n")
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

/// Milliseconds since the Unix epoch as ISO-8601 UTC: `2026-05-20T08:15:42.123Z`.
pub fn time(unix_ms: u64) -> String {
    let secs = unix_ms / 1000;
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), proleptic Gregorian calendar.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + u64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        unix_ms % 1000
    )
}

/// Time of day of `time`: `08:15:42` (UTC).
pub fn clock(unix_ms: u64) -> String {
    time(unix_ms).get(11..19).unwrap_or_default().to_owned()
}

/// A stack's verdict cell: `frozen since 08:15:42` (UTC) for the figures of detached probes.
pub fn verdict(verdict: Verdict, frozen: Option<&FrozenReport>) -> String {
    match frozen {
        Some(frozen) => format!("frozen since {}", clock(frozen.since_unix_ms)),
        None => verdict.as_str().to_owned(),
    }
}

/// A size in kB (as the kernel reports memory) in human units; `?` when unknown.
pub fn kb(kb: Option<u64>) -> String {
    kb.map_or_else(|| "?".to_owned(), |kb| size(kb.saturating_mul(1024)))
}

/// A container id in its short form, as `docker ps` shows it: the first 12 hexadecimal digits.
pub fn container(id: &str) -> String {
    id.chars().take(12).collect()
}

/// Where a process lives, for the extra columns of a process table: the short container id and the pid in the
/// process's own namespace, when they are known and say something (`ns_pid` equal to the host pid does not).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Place {
    pub container: Option<String>,
    pub ns_pid: Option<u32>,
}

impl Place {
    pub fn of(pid: u32, ns_pid: Option<u32>, container_id: Option<&str>) -> Self {
        Self { container: container_id.map(container), ns_pid: ns_pid.filter(|&ns| ns != pid) }
    }
}

/// Which of the columns `CONTAINER` and `NS PID` a table of `places` needs: only those some row fills, so a
/// host without containers keeps its tables as they were.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PlaceColumns {
    container: bool,
    ns_pid: bool,
}

impl PlaceColumns {
    pub fn for_rows<'a>(places: impl IntoIterator<Item = &'a Place>) -> Self {
        places.into_iter().fold(Self::default(), |columns, place| Self {
            container: columns.container || place.container.is_some(),
            ns_pid: columns.ns_pid || place.ns_pid.is_some(),
        })
    }

    /// The headers, to put right after `PID`.
    pub fn headers(self) -> Vec<&'static str> {
        let mut headers = Vec::new();
        if self.container {
            headers.push("CONTAINER");
        }
        if self.ns_pid {
            headers.push("NS PID");
        }
        headers
    }

    /// The cells of one row (`-` where a row has no value).
    pub fn cells(self, place: &Place) -> Vec<String> {
        let mut cells = Vec::new();
        if self.container {
            cells.push(place.container.clone().unwrap_or_else(|| "-".to_owned()));
        }
        if self.ns_pid {
            cells.push(place.ns_pid.map_or_else(|| "-".to_owned(), |pid| pid.to_string()));
        }
        cells
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
    fn rates_and_ages_are_human() {
        assert_eq!(rate(204.8), "12 KiB/min");
        assert_eq!(rate(2.0 * 1024.0 * 1024.0), "2 MiB/s");
        assert_eq!(rate(0.5), "1.76 KiB/h");
        assert_eq!(rate(-204.8), "-12 KiB/min");
        assert_eq!(rate(0.0), "0 B/h");
        assert_eq!(age(Some(303.0)), "5m 3s");
        assert_eq!(age(Some(7260.4)), "2h 1m");
        assert_eq!(age(None), "-");
    }

    #[test]
    fn times_are_iso_8601_utc() {
        assert_eq!(time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(time(951_782_400_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(time(1_779_264_942_123), "2026-05-20T08:15:42.123Z");
        assert_eq!(kb(Some(2048)), "2 MiB");
        assert_eq!(kb(None), "?");
        assert_eq!(clock(1_779_264_942_123), "08:15:42");
        let frozen = FrozenReport { since_unix_ms: 1_779_264_942_123, why: "CPU budget".into() };
        assert_eq!(verdict(Verdict::Frozen, Some(&frozen)), "frozen since 08:15:42");
        assert_eq!(verdict(Verdict::Leaking, None), "leaking");
    }

    #[test]
    fn container_columns_only_when_some_row_has_one() {
        let id = "0123456789abcdef".repeat(4);
        let host = Place::of(10, None, None);
        let same_ns = Place::of(11, Some(11), None);
        let contained = Place::of(12, Some(1), Some(&id));
        assert_eq!(contained, Place { container: Some("0123456789ab".into()), ns_pid: Some(1) });
        assert_eq!(same_ns, host, "an ns_pid equal to the pid says nothing");
        let none = PlaceColumns::for_rows([&host, &same_ns]);
        assert!(none.headers().is_empty() && none.cells(&host).is_empty());
        let both = PlaceColumns::for_rows([&host, &contained]);
        assert_eq!(both.headers(), ["CONTAINER", "NS PID"]);
        assert_eq!(both.cells(&host), ["-", "-"]);
        assert_eq!(both.cells(&contained), ["0123456789ab", "1"]);
        let only_ns = PlaceColumns::for_rows([&Place::of(13, Some(2), None)]);
        assert_eq!(only_ns.headers(), ["NS PID"]);
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
